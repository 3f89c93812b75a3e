"""The storage services' real local servers, started once per test session on 127.0.0.1:
Azurite (the Azure Storage emulator, installed from npm by scripts/install.sh) for Azure Blob, and
moto's server mode for S3, with authentication on (requests must be signed with a key moto issued).

Ports: free ones in STUDIO_TEST_STORAGE_PORT_MIN..MAX when set (helpers sharing a machine keep to
their range), else any free port."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
AZURITE_DIR = Path(os.environ.get("STUDIO_AZURITE_DIR", Path.home() / ".cache/studio/azurite"))
# Azurite's well-known development account (public: Azurite's documentation prints it).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    low, high = os.environ.get("STUDIO_TEST_STORAGE_PORT_MIN"), os.environ.get("STUDIO_TEST_STORAGE_PORT_MAX")
    candidates = range(int(low), int(high) + 1) if low and high else [0]
    for port in candidates:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError(f"no free port in {low}-{high}")


def wait_port(port: int, proc: subprocess.Popen, what: str, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not listen on {port} within {timeout}s: {log.read_text(errors='replace')[-2000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@dataclass
class Azurite:
    port: int

    @property
    def account_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT}"

    def service(self):
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient(self.account_url, credential={"account_name": AZURITE_ACCOUNT,
                                                               "account_key": AZURITE_KEY})

    def container(self, name: str):
        """A fresh container (emptied if it exists)."""
        service = self.service()
        client = service.get_container_client(name)
        if client.exists():
            for blob in client.list_blobs():
                client.delete_blob(blob.name)
        else:
            client.create_container()
        return client

    def spec(self, name: str, container: str, **extra) -> dict:
        return {"name": name, "type": "azure_blob", "account_name": AZURITE_ACCOUNT, "container_name": container,
                "account_url": self.account_url, "credentials": {"account_key": AZURITE_KEY}, **extra}


@dataclass
class MotoS3:
    port: int
    access_key_id: str
    secret_access_key: str

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
                            aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key)

    def bucket(self, name: str):
        """A fresh bucket (emptied if it exists); returns the client."""
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            for obj in client.list_objects_v2(Bucket=name).get("Contents", []):
                client.delete_object(Bucket=name, Key=obj["Key"])
        return client

    def spec(self, name: str, bucket: str, **extra) -> dict:
        return {"name": name, "type": "s3", "bucket": bucket, "endpoint_url": self.endpoint_url,
                "region": "us-east-1", "credentials": {"access_key_id": self.access_key_id,
                                                       "secret_access_key": self.secret_access_key}, **extra}


def start_azurite() -> tuple[Azurite, subprocess.Popen, Path]:
    """Azurite's Blob service on a free port, its data in a temporary folder (the bench uses it too)."""
    binary = AZURITE_DIR / "node_modules" / ".bin" / "azurite-blob"
    if not binary.exists():
        raise RuntimeError(f"azurite is not installed in {AZURITE_DIR}: run `make install-test` (needs npm)")
    port = free_port()
    data = Path(tempfile.mkdtemp(prefix="azurite-"))
    log = data / "azurite.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(binary), "--blobHost", "127.0.0.1", "--blobPort", str(port),
                                 "--location", str(data), "--skipApiVersionCheck", "--silent"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_port(port, proc, "azurite", log)
    except Exception:
        stop(proc)
        raise
    return Azurite(port=port), proc, data


@pytest.fixture(scope="session")
def azurite():
    server, proc, data = start_azurite()
    try:
        yield server
    finally:
        stop(proc)
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="session")
def moto_s3():
    """moto's server with authentication: its first three requests (unauthenticated) make an IAM user
    with an access key and an allow-all policy; every later request must be signed with that key."""
    import boto3

    port = free_port()
    data = Path(tempfile.mkdtemp(prefix="moto-"))
    log = data / "moto.log"
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3", "AWS_ACCESS_KEY_ID": "bootstrap",
           "AWS_SECRET_ACCESS_KEY": "bootstrap"}
    python = ROOT / ".venv" / "bin" / "python"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(python if python.exists() else "python3"), "-m", "moto.server", "-H", "127.0.0.1",
                                 "-p", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        wait_port(port, proc, "moto server", log)
        iam = boto3.client("iam", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                           aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
        iam.create_user(UserName="studio-tests")
        key = iam.create_access_key(UserName="studio-tests")["AccessKey"]
        iam.put_user_policy(UserName="studio-tests", PolicyName="all", PolicyDocument=(
            '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}'))
        yield MotoS3(port=port, access_key_id=key["AccessKeyId"], secret_access_key=key["SecretAccessKey"])
    finally:
        stop(proc)
        shutil.rmtree(data, ignore_errors=True)

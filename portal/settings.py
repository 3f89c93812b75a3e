"""Settings for the studio. Everything configurable comes from the environment
through the typed helpers in portal.env; see the README's configuration table."""

import os
import secrets
import socket
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url

from portal.env import (
    ImproperEnv,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_path,
    env_str,
    env_url,
)

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = env_path("STUDIO_DATA_DIR", BASE_DIR / "var")
# Private from its first creation (database, secret key, admin password, broker, logs, artifacts):
# what the studio creates is its own alone; sandboxes see only their own folder (runtime/sandbox.py).
os.umask(0o077)
DATA_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
if DATA_DIR.stat().st_uid == os.geteuid():
    DATA_DIR.chmod(0o700)

DEBUG = env_bool("DEBUG", False)
STUDIO_PORT = env_int("STUDIO_PORT", 8000, minimum=1, maximum=65535)
STUDIO_HOST = env_str("STUDIO_HOST", "127.0.0.1")
# Where clients reach the gateway when it runs apart from the web process
# (e.g. https://inference.example.com); unset in the embedded default.
STUDIO_GATEWAY_URL = (env_str("STUDIO_GATEWAY_URL", "") or "").rstrip("/")
# The password of the `admin` user `studio_bootstrap` makes on first run; generated when unset.
STUDIO_ADMIN_PASSWORD = env_str("STUDIO_ADMIN_PASSWORD")


def _secret_key() -> str:
    """SECRET_KEY from the environment, else the one generated into the data dir on first use.

    Every process started in the repo (web, worker, gateway, `manage.py ...` in a plain shell)
    reads the same file, so keys, sessions and tokens agree across them."""
    key = env_str("SECRET_KEY")
    if key:
        return key
    path = DATA_DIR / "secret-key.txt"
    if not path.exists():
        # Written whole to a private temp file, then linked into place: a process starting at
        # the same moment sees either no file or the complete key, and only one key wins.
        tmp = DATA_DIR / f".secret-key.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(50))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
# Old keys, newest first, still accepted while they rotate out (sessions, endpoint keys, tokens).
SECRET_KEY_FALLBACKS = env_list("SECRET_KEY_FALLBACKS")


def _allowed_hosts() -> list[str]:
    hosts = ["localhost", "127.0.0.1", "[::1]"]
    if STUDIO_HOST not in ("0.0.0.0", "::", "") and STUDIO_HOST not in hosts:
        hosts.append(STUDIO_HOST)
    hosts += [h for h in env_list("STUDIO_ALLOWED_HOSTS") if h not in hosts]
    # Django answers a batch endpoint's scoring_uri (POST /inference/<e>/jobs) on the gateway's own host too.
    gateway_host = urlsplit(STUDIO_GATEWAY_URL).hostname if STUDIO_GATEWAY_URL else None
    if gateway_host and gateway_host not in hosts:
        hosts.append(gateway_host)
    return hosts


# The names the studio answers to: loopback, the bind address, and STUDIO_ALLOWED_HOSTS
# (the public host name(s) users type; `.example.com` matches subdomains).
ALLOWED_HOSTS = _allowed_hosts()
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
CSRF_FAILURE_VIEW = "portal.errors.csrf_failure"  # JSON under /api/, the studio's page elsewhere

# HTTPS: STUDIO_TLS=1 when users reach the studio over https (directly or through a proxy).
STUDIO_TLS = env_bool("STUDIO_TLS", False)
# STUDIO_BEHIND_PROXY=1 when a reverse proxy terminates TLS and sets X-Forwarded-Proto.
STUDIO_BEHIND_PROXY = env_bool("STUDIO_BEHIND_PROXY", False)
if STUDIO_BEHIND_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = STUDIO_TLS
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = CSRF_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if STUDIO_TLS:
    SECURE_SSL_REDIRECT = True
    # Probes and scrapers on the host speak plain http to the bind address.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
    SECURE_HSTS_SECONDS = env_int("STUDIO_HSTS_SECONDS", 31536000, minimum=0)
# HSTS for sibling subdomains and the browsers' preload list commit a whole domain, which is
# its owner's decision, not the studio's: the studio sets HSTS for its own host only.
SILENCED_SYSTEM_CHECKS = ["security.W005", "security.W021"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "rest_framework",
    "knox",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "endpoints_app",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "endpoints_app.middleware.WorkspaceMiddleware",
    # Last, as django-axes asks: it turns a throttled sign-in into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "portal.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "endpoints_app.middleware.workspace_context",
                "portal.oidc.identity_context",
            ],
        },
    },
]
ASGI_APPLICATION = "portal.asgi.application"

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL") or f"sqlite:///{DATA_DIR / 'studio.sqlite3'}", conn_max_age=0
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Embedded default: WAL and IMMEDIATE so web, worker and beat processes can share the file.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not memory: workers and model servers in other processes must see test data.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}
else:
    DATABASES["default"]["CONN_MAX_AGE"] = 60
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
AUTHENTICATION_BACKENDS = [
    "portal.auth.LoginThrottleBackend",  # first: refuses a locked-out sign-in before checking it
    # Passwords, while STUDIO_LOCAL_LOGIN is on; loads every signed-in user (OpenID ones too).
    "portal.auth.LocalAccountBackend",
]
# Sign-in throttling (django-axes): this many failures for one username from one address
# lock that pair out for STUDIO_LOGIN_COOLOFF_MINUTES; a success resets the count.
AXES_FAILURE_LIMIT = env_int("STUDIO_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("STUDIO_LOGIN_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "portal.auth.client_ip"
AXES_LOCKOUT_CALLABLE = "portal.auth.lockout_response"
AXES_VERBOSE = False

# Sign-in with the company's OpenID provider (portal/oidc.py) and identity tokens on endpoints and the
# API (endpoints_app/oidc.py). Off unless STUDIO_OIDC_ISSUER is set; its metadata is discovered.
STUDIO_OIDC_ISSUER = env_url("STUDIO_OIDC_ISSUER")
STUDIO_OIDC_CLIENT_ID = env_str("STUDIO_OIDC_CLIENT_ID", "") or ""
STUDIO_OIDC_CLIENT_SECRET = env_str("STUDIO_OIDC_CLIENT_SECRET", "") or ""
# The audience of tokens sent to endpoints and the API (an access token's `aud`); default the client id.
STUDIO_OIDC_AUDIENCE = env_str("STUDIO_OIDC_AUDIENCE", STUDIO_OIDC_CLIENT_ID) or ""
STUDIO_OIDC_SCOPES = env_str("STUDIO_OIDC_SCOPES", "openid profile email") or ""
STUDIO_OIDC_GROUPS_CLAIM = env_str("STUDIO_OIDC_GROUPS_CLAIM", "groups") or ""
# The provider's name on the sign-in button ("Sign in with <name>").
STUDIO_OIDC_NAME = env_str("STUDIO_OIDC_NAME", "single sign-on") or ""
# Members of these provider groups are IT: staff and superusers of the admin console.
STUDIO_OIDC_ADMIN_GROUPS = env_list("STUDIO_OIDC_ADMIN_GROUPS")
# Clock skew allowed on exp/nbf, and how long the provider's signing keys are kept between fetches
# (an unknown key id fetches them again at once, at most every STUDIO_OIDC_JWKS_MIN_REFRESH_SECONDS).
STUDIO_OIDC_LEEWAY_SECONDS = env_int("STUDIO_OIDC_LEEWAY_SECONDS", 30, minimum=0, maximum=600)
STUDIO_OIDC_JWKS_CACHE_SECONDS = env_int("STUDIO_OIDC_JWKS_CACHE_SECONDS", 3600, minimum=1)
STUDIO_OIDC_JWKS_MIN_REFRESH_SECONDS = env_float("STUDIO_OIDC_JWKS_MIN_REFRESH_SECONDS", 5.0, minimum=0, maximum=3600)
# Username/password accounts; turn off to have everyone sign in with the provider.
STUDIO_LOCAL_LOGIN = env_bool("STUDIO_LOCAL_LOGIN", True)
if STUDIO_OIDC_ISSUER and not STUDIO_OIDC_CLIENT_ID:
    raise ImproperEnv("STUDIO_OIDC_ISSUER is set but STUDIO_OIDC_CLIENT_ID is not: the studio needs its client id")
if STUDIO_OIDC_CLIENT_ID and not STUDIO_OIDC_ISSUER:
    raise ImproperEnv("STUDIO_OIDC_CLIENT_ID is set but STUDIO_OIDC_ISSUER is not: set the provider's issuer URL")
if not STUDIO_LOCAL_LOGIN and not STUDIO_OIDC_ISSUER:
    raise ImproperEnv("STUDIO_LOCAL_LOGIN is off and no STUDIO_OIDC_ISSUER is set: nobody could sign in")
if STUDIO_OIDC_ISSUER and "openid" not in STUDIO_OIDC_SCOPES.split():
    raise ImproperEnv(f"STUDIO_OIDC_SCOPES={STUDIO_OIDC_SCOPES!r} lacks 'openid'")

LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
MEDIA_ROOT = DATA_DIR / "artifacts"

# Uploads: the API answers 413 above this size.
STUDIO_MAX_UPLOAD_BYTES = env_int("STUDIO_MAX_UPLOAD_MB", 200, minimum=1) * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
# Larger files stream to a temporary file whose name never depends on the client's (portal/uploads.py).
FILE_UPLOAD_HANDLERS = [
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "portal.uploads.StudioTemporaryFileUploadHandler",
]
# A data asset upload may carry many files (services/data.py MAX_FILES).
DATA_UPLOAD_MAX_NUMBER_FILES = 10_000

# Celery: a broker that needs no server in the embedded default.
REDIS_URL = env_str("REDIS_URL")
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or "filesystem://"
_broker_dir = DATA_DIR / "broker"
if CELERY_BROKER_URL.startswith("filesystem://"):
    for sub in ("queue", "processed", "control"):
        (_broker_dir / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        # The worker looks for new messages this often (kombu's default is 1 s): provisioning
        # starts within 0.05 s of the create call, and a batch job's first mini-batch within 0.05 s
        # of its server being ready; a directory listing 20 times a second per queue is cheap.
        "polling_interval": 0.05,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {}
CELERY_TASK_IGNORE_RESULT = True
# The worker runs its tasks in threads, never in a prefork pool: no lock a dead process can hold.
# With a transport that has no event loop (the embedded default's filesystem broker) Celery's prefork
# pool hands tasks to its children through ONE shared pipe guarded by ONE SemLock, which an idle child
# holds while it waits for work; a child SIGKILLed while holding it (the OOM killer does that) froze
# every other child forever, and with them reconcile, provisioning and batch jobs. billiard cannot
# release a lock its dead owner held, so no timeout or retry fixes that; the asynchronous prefork pool
# (a pipe per child) exists only on transports with an event loop (Redis), so it would hold on one
# configuration and not the other. Threads share no cross-process lock and cannot be killed one by
# one: what can die is a whole worker process, and `make run`'s supervisor (portal/supervisor.py)
# runs STUDIO_WORKER_PROCESSES of them per node and restarts any that exits (backoff, logged), while
# the others keep taking tasks. Tasks are ids-only and idempotent, reconcile is level-triggered and a
# mini-batch whose worker died is reclaimed, so a task lost with its process costs a retry, not a row.
# The tasks wait on I/O (the database, model servers' HTTP, the broker), which threads overlap.
CELERY_WORKER_POOL = "threads"
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
STUDIO_RECONCILE_SECONDS = env_int("STUDIO_RECONCILE_SECONDS", 5, minimum=1)
CELERY_BEAT_SCHEDULE = {
    "reconcile": {
        "task": "endpoints_app.controller.tasks.reconcile",
        "schedule": float(STUDIO_RECONCILE_SECONDS),
        "options": {"expires": float(STUDIO_RECONCILE_SECONDS) * 2},
    },
    # Metering: usage rollups (then budget warnings) every minute; instance CPU/memory samples.
    "metering-rollup": {"task": "metering.rollup", "schedule": 60.0, "options": {"expires": 120.0}},
    "metering-sample-instances": {"task": "metering.sample_instances", "schedule": 30.0, "options": {"expires": 30.0}},
    # Batch jobs: admit queued jobs, resume running ones (after a restart too), stop idle servers.
    "batch-tick": {
        "task": "endpoints_app.batch.tasks.tick",
        "schedule": float(STUDIO_RECONCILE_SECONDS),
        "options": {"expires": float(STUDIO_RECONCILE_SECONDS) * 2},
    },
}
# Batch jobs running at once (later ones wait, Queued, in order), and the most rows one
# mini-batch takes from a large file (larger files are cut into row ranges).
STUDIO_BATCH_MAX_RUNNING_JOBS = env_int("STUDIO_BATCH_MAX_RUNNING_JOBS", 4, minimum=1)
STUDIO_BATCH_ROWS_PER_MINI_BATCH = env_int("STUDIO_BATCH_ROWS_PER_MINI_BATCH", 10000, minimum=1)
# /metrics: with a token, `Authorization: Bearer <token>` from anywhere; without one, only
# direct loopback callers (no proxy headers). Scrapes within the cache period share one snapshot.
STUDIO_METRICS_TOKEN = env_str("STUDIO_METRICS_TOKEN")
STUDIO_METRICS_CACHE_SECONDS = env_int("STUDIO_METRICS_CACHE_SECONDS", 10, minimum=0, maximum=3600)
# First of the million uids sandboxes get when the studio runs as root (runtime/sandbox.py); the
# build sandbox takes the one below it. Above the accounts, below the largest uid (2^32 - 2).
STUDIO_SANDBOX_UID_BASE = env_int("STUDIO_SANDBOX_UID_BASE", 1_500_000_000, minimum=1001,
                                  maximum=2**32 - 2 - 1_000_000)
# The node this process's worker runs on (the supervisor uses the same name for its queue).
STUDIO_NODE_NAME = env_str("STUDIO_NODE_NAME") or socket.gethostname()
# The address the gateway uses to reach this node's model servers (they bind to it too).
STUDIO_NODE_HOST = env_str("STUDIO_NODE_HOST", "127.0.0.1")
# Ray computes (controller/ray_backend.py, docs/cluster.md): where Ray nodes reach the studio for a
# model's artifacts (default: the gateway base, STUDIO_GATEWAY_URL or this machine's web port), and
# the address this machine's Ray driver uses when the studio runs on a machine of the cluster.
STUDIO_INTERNAL_URL = env_str("STUDIO_INTERNAL_URL", "")
STUDIO_RAY_NODE_IP = env_str("STUDIO_RAY_NODE_IP", "")
# A node offers 4x its cores and 2x its memory by default: model servers on a dev box idle
# most of the time, and 2-3 small instances (plus a surge) must fit on a 2-core machine.
STUDIO_NODE_CORES = env_int("STUDIO_NODE_CORES", 4 * (os.cpu_count() or 1), minimum=1)
STUDIO_NODE_MEMORY_GB = env_int(
    "STUDIO_NODE_MEMORY_GB",
    max(1, 2 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 1024**3),
    minimum=1,
)
# Cores per instance family a workspace may use when IT set no QuotaLimit.
STUDIO_DEFAULT_CORE_QUOTA = env_int("STUDIO_DEFAULT_CORE_QUOTA", 32, minimum=0)
# Seconds a stopping instance stays up after the gateway stopped routing to it.
STUDIO_DRAIN_SECONDS = env_int("STUDIO_DRAIN_SECONDS", 3, minimum=0)
# Restarts of an instance that never stays up before the deployment is Failed.
STUDIO_MAX_RESTARTS = env_int("STUDIO_MAX_RESTARTS", 3, minimum=0)
# Serverless pools (platform-managed model servers): stopped after this many minutes without a
# request, and scaled with load up to this many instances per model.
STUDIO_SERVERLESS_IDLE_MINUTES = env_int("STUDIO_SERVERLESS_IDLE_MINUTES", 15, minimum=1)
STUDIO_SERVERLESS_MAX_INSTANCES = env_int("STUDIO_SERVERLESS_MAX_INSTANCES", 2, minimum=1)
# The compute (by name) serverless pools run on: new pools start there, a stopped pool moves there
# when it is next woken (models/computes.py serverless_compute_id).
STUDIO_SERVERLESS_COMPUTE = env_str("STUDIO_SERVERLESS_COMPUTE", "local")
STUDIO_INSTANCE_PORTS = (
    env_int("STUDIO_INSTANCE_PORT_MIN", 20000, minimum=1024, maximum=65535),
    env_int("STUDIO_INSTANCE_PORT_MAX", 29999, minimum=1024, maximum=65535),
)
# Ray computes (endpoints_app/controller/clusters.py). The head the studio starts on this machine for a
# Ray compute without an address opens the 100 ports from STUDIO_RAY_PORT_MIN (its GCS on the first),
# with STUDIO_RAY_HEAD_CPUS CPUs for instances (default: Ray counts the machine's).
STUDIO_RAY_PORT_MIN = env_int("STUDIO_RAY_PORT_MIN", 31000, minimum=1024, maximum=65535 - 99)
STUDIO_RAY_HEAD_CPUS = env_int("STUDIO_RAY_HEAD_CPUS", 0, minimum=0) or None
# A Ray compute's head that gives no answer within this many seconds is Unreachable; what was read is
# reused for STUDIO_COMPUTE_VIEW_CACHE_SECONDS.
STUDIO_RAY_PROBE_TIMEOUT_SECONDS = env_float("STUDIO_RAY_PROBE_TIMEOUT_SECONDS", 5.0, minimum=0.5, maximum=120)
STUDIO_COMPUTE_VIEW_CACHE_SECONDS = env_int("STUDIO_COMPUTE_VIEW_CACHE_SECONDS", 5, minimum=0, maximum=3600)

# Processes `make run` starts (portal/supervisor.py reads these, checked here with the rest).
STUDIO_WEB_WORKERS = env_int("STUDIO_WEB_WORKERS", 2, minimum=1, maximum=64)
STUDIO_WORKER_CONCURRENCY = env_int("STUDIO_WORKER_CONCURRENCY", 4, minimum=1, maximum=64)
# Celery worker processes per node (each runs STUDIO_WORKER_CONCURRENCY task threads): when one dies,
# the others keep taking tasks while the supervisor replaces it.
STUDIO_WORKER_PROCESSES = env_int("STUDIO_WORKER_PROCESSES", 2, minimum=1, maximum=16)

# The gateway (endpoints_app/gateway/ reads these).
STUDIO_GATEWAY_MAX_PAYLOAD_BYTES = env_int("STUDIO_GATEWAY_MAX_PAYLOAD_BYTES", 4 * 1024 * 1024, minimum=1)
STUDIO_GATEWAY_POLL_SECONDS = env_float("STUDIO_GATEWAY_POLL_SECONDS", 0.5, minimum=0.01, maximum=60)
# Safety net: gateways reload their routes this often even without a version change.
STUDIO_GATEWAY_MAX_TABLE_AGE_SECONDS = env_float("STUDIO_GATEWAY_MAX_TABLE_AGE_SECONDS", 10.0, minimum=0.1,
                                                 maximum=3600)
STUDIO_GATEWAY_FLUSH_SECONDS = env_float("STUDIO_GATEWAY_FLUSH_SECONDS", 2.0, minimum=0.05, maximum=3600)
STUDIO_GATEWAY_MAX_MIRROR_INFLIGHT = env_int("STUDIO_GATEWAY_MAX_MIRROR_INFLIGHT", 64, minimum=1)
# Off only to measure what metering costs (bench/gateway.py); usage and cost go unrecorded.
STUDIO_GATEWAY_METERING = env_bool("STUDIO_GATEWAY_METERING", True)
# Off only to measure what the usage journal costs (bench/gateway.py): counts held in memory between flushes
# are then lost when a gateway worker is killed (endpoints_app/gateway/metering.py).
STUDIO_GATEWAY_USAGE_JOURNAL = env_bool("STUDIO_GATEWAY_USAGE_JOURNAL", True)
STUDIO_GATEWAY_CLIENT = env_choice("STUDIO_GATEWAY_CLIENT", "http1", ("http1", "aiohttp"))
# A call on a stopped serverless pool waits this long for an instance before 503 + Retry-After.
STUDIO_GATEWAY_COLD_WAIT_SECONDS = env_float("STUDIO_GATEWAY_COLD_WAIT_SECONDS", 20.0, minimum=0, maximum=3600)

if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # First: a JWT from the OpenID provider (anything else falls through to the API tokens).
        "endpoints_app.api.auth.OidcTokenAuthentication",
        "endpoints_app.api.auth.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON nested too deeply is a 400 (endpoints_app.jsonbody), not a RecursionError.
    "DEFAULT_PARSER_CLASSES": [
        "endpoints_app.api.parsers.StudioJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "endpoints_app.api.pagination.StudioPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "endpoints_app.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # `format` is a catalog filter, not a renderer switch.
    "URL_FORMAT_OVERRIDE": None,
}
# API tokens: django-rest-knox stores a SHA-512 digest, never the token; ours is the model.
KNOX_TOKEN_MODEL = "endpoints_app.ApiToken"
# knox's own table is swapped out for ours: its migrations would only make an unused table.
MIGRATION_MODULES = {"knox": None}
STUDIO_API_TOKEN_DAYS = env_int("STUDIO_API_TOKEN_DAYS", 90, minimum=1, maximum=3650)
REST_KNOX = {
    "TOKEN_PREFIX": "studio_",
    "TOKEN_TTL": timedelta(days=STUDIO_API_TOKEN_DAYS),
    "AUTO_REFRESH": False,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Studio REST API",
    "DESCRIPTION": "Workspaces, catalog models, endpoints and deployments.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Vendored, never a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "/favicon.ico",
    "REDOC_DIST": "SIDECAR",
    # Several resources have a `state` with their own choices: name each set.
    "ENUM_NAME_OVERRIDES": {
        "InstanceStateEnum": "endpoints_app.models.endpoints.InstanceState",
        "ComputeStateEnum": "endpoints_app.models.computes.Compute.State",
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_choice("LOG_LEVEL", "INFO",
                                                          ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # The reconcile beat runs every few seconds: keep per-task received/succeeded lines out.
        "celery.app.trace": {"level": "WARNING"},
        "celery.worker.strategy": {"level": "WARNING"},
        "celery.beat": {"level": "WARNING"},
        # django-axes logs every sign-in at INFO; failures and lockouts are WARNING.
        "axes": {"level": "WARNING"},
    },
}

# Environments (endpoints_app/runtime/environments.py): where builds get packages, how long one may take,
# and how much disk built venvs may use before unused ones are removed (least recently used first).
# The index: STUDIO_ENV_INDEX_URL, else uv's or pip's usual variable, else PyPI; "none": local only.
STUDIO_ENV_INDEX_URL = env_str("STUDIO_ENV_INDEX_URL") or env_str("UV_INDEX_URL") or env_str("PIP_INDEX_URL") or ""
STUDIO_ENV_EXTRA_INDEX_URLS = (env_str("UV_EXTRA_INDEX_URL") or env_str("PIP_EXTRA_INDEX_URL") or "").split()
# Local wheel folders (machines without an index): STUDIO_ENV_FIND_LINKS, else UV_/PIP_FIND_LINKS.
STUDIO_ENV_FIND_LINKS = (
    env_str("STUDIO_ENV_FIND_LINKS") or env_str("UV_FIND_LINKS") or env_str("PIP_FIND_LINKS") or ""
).split()
# Hosts (comma-separated, "host" or "host:port") a build's egress proxy lets through besides the index
# URLs' own hosts; unset: files.pythonhosted.org when pypi.org is an index (runtime/egress.py).
STUDIO_ENV_EGRESS_HOSTS = env_list("STUDIO_ENV_EGRESS_HOSTS") if "STUDIO_ENV_EGRESS_HOSTS" in os.environ else None
STUDIO_ENV_UV_CACHE = env_path("STUDIO_ENV_UV_CACHE", DATA_DIR / "environments" / "uv-cache")
STUDIO_ENV_BUILD_TIMEOUT_SECONDS = env_int("STUDIO_ENV_BUILD_TIMEOUT_SECONDS", 900, minimum=10)
STUDIO_ENV_CACHE_GB = env_float("STUDIO_ENV_CACHE_GB", 20.0, minimum=0.0)

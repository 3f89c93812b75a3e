"""The environment variables a deployment may not set: one rule for the services, which refuse them in a
spec (services/specs.py), and for the model server's launch, which drops them whatever reaches it
(runtime/launch.py). Plain Python: the sandbox side imports it without Django or the services."""

from __future__ import annotations

from collections.abc import Iterable

# Deployment variables refused (compared upper-cased). The loader's (LD_*; glibc drops these and the
# others below for setuid programs), Python's (PYTHON*), other runtimes' and shells' start-up
# variables: each can make a process run code of the user's choosing as it starts, before the sandbox
# has dropped its privileges. GLIBC_TUNABLES and MALLOC_* tune the C library itself.
REFUSED_ENV_PREFIXES = ("LD_", "DYLD_", "PYTHON", "GLIBC_", "MALLOC_", "STUDIO_", "BASH_FUNC_")
REFUSED_ENV_NAMES = frozenset({
    # glibc's other unsecure variables: gconv modules, locale, NSS and resolver paths.
    "GCONV_PATH", "GETCONF_DIR", "HOSTALIASES", "LOCALDOMAIN", "LOCPATH", "NIS_PATH", "NLSPATH",
    "RESOLV_HOST_CONF", "RES_OPTIONS", "TZDIR",
    # Shells' start-up files and options; other interpreters' and libraries' code paths.
    "BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "PS4", "IFS", "PROMPT_COMMAND",
    "PERL5LIB", "PERL5OPT", "PERLLIB", "RUBYLIB", "RUBYOPT", "NODE_OPTIONS", "NODE_PATH",
    "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "OPENSSL_CONF", "OPENSSL_ENGINES", "OPENSSL_MODULES",
    # What the studio sets for the model server itself (runtime/launch.py, runtime/sandbox.py,
    # instance_auth): where it finds programs and its home, what keeps it offline, its secret.
    "PATH", "HOME", "TMPDIR", "TMP", "TEMP", "USER", "LOGNAME", "SHELL", "XDG_CACHE_HOME", "AZUREML_MODEL_DIR",
    "API_KEY", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "TOKENIZERS_PARALLELISM",
})


def refused_variable_names(names: Iterable[str]) -> list[str]:
    """The names among `names` a deployment may not set (in any case): what the dynamic loader, Python,
    a shell or another runtime reads as it starts (code to preload, paths to import from, options to
    apply), which would run a user's code before the sandbox has dropped its privileges, and the names
    the studio sets for the model server (its paths, home, offline switches, secret)."""
    refused = []
    for name in names:
        upper = name.upper()
        if upper in REFUSED_ENV_NAMES or upper.startswith(REFUSED_ENV_PREFIXES):
            refused.append(name)
    return sorted(refused)

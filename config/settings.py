"""Leadline settings. Everything comes from the environment (django-environ).

Defaults are the embedded development setup: SQLite under ``var/`` and kombu's
filesystem broker under ``var/broker/``. Production points ``DATABASE_URL`` at
PostgreSQL and ``CELERY_BROKER_URL`` at Redis. Every variable is documented in
README.md with its default.
"""

import base64
import hashlib
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("LEADLINE_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()

# --- Core -------------------------------------------------------------------
DEBUG = env.bool("DJANGO_DEBUG", default=True)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="dev-insecure-leadline-secret-key-change-me" if DEBUG else None)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])
# Public base URL used to print webhook URLs (configure_workspace, admin).
PUBLIC_BASE_URL = env.str("LEADLINE_PUBLIC_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "config.apps.LeadlineAdminConfig",  # django.contrib.admin with the inbox (config/admin.py)
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_celery_beat",
    "core",
    "workspaces",
    "leads",
    "messaging",
    "drafts",
    "availability",
    "ghl",
    "emailbison",
    "inbox",
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
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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
            ],
        },
    },
]

# --- HTTPS and cookies (production) -------------------------------------------
# With DJANGO_DEBUG=false every default below is the safe one and `manage.py check --deploy`
# reports no issue (README, "Production"; core/tests/test_deploy_settings.py runs it).
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=not DEBUG)
# Health checks of a load balancer come over plain HTTP inside the private network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("DJANGO_SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("DJANGO_CSRF_COOKIE_SECURE", default=not DEBUG)
SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Behind a TLS-terminating proxy that sets X-Forwarded-Proto (and overwrites any value a client
# sent): DJANGO_SECURE_PROXY_SSL_HEADER=true. Never without such a proxy: clients could claim HTTPS.
if env.bool("DJANGO_SECURE_PROXY_SSL_HEADER", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Database ---------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'leadline.sqlite3'}")}
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# PostgreSQL: with DATABASE_POOL_MAX_SIZE > 0 a process borrows connections from a psycopg pool
# (Django's "pool" option) and gives them back when Django closes them, so it holds at most that
# many whatever its thread count: the drafts worker's setting (Procfile, README; docs/drafts.md,
# "Connections"). 0, the default = no pool, one persistent connection per thread (CONN_MAX_AGE):
# the webhooks measured slower with a pool (a checkout per request; docs/benchmarks.md).
DATABASE_POOL_MAX_SIZE = env.int("DATABASE_POOL_MAX_SIZE", default=0)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and DATABASE_POOL_MAX_SIZE > 0:
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # the pool keeps the connections; Django must not
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": min(env.int("DATABASE_POOL_MIN_SIZE", default=1), DATABASE_POOL_MAX_SIZE),
        "max_size": DATABASE_POOL_MAX_SIZE,
        # A thread waits this long for a free connection before its query fails.
        "timeout": env.float("DATABASE_POOL_TIMEOUT_S", default=30.0),
        # An idle connection above min_size is closed after this (a burst's extra connections go).
        "max_idle": env.float("DATABASE_POOL_MAX_IDLE_S", default=60.0),
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded setup runs web + worker + beat on one file: wait for locks
    # instead of failing with "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update({"timeout": 20, "transaction_mode": "IMMEDIATE"})
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- I18N / static ----------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
# Admin CSS/JS served by the WSGI app itself (whitenoise), in dev and behind gunicorn alike.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- Credentials at rest ----------------------------------------------------
# One or more Fernet keys, comma separated. The first encrypts; all decrypt
# (MultiFernet), which is how a key is rotated: prepend the new key, run
# `manage.py rotate_encryption_key`, then drop the old one.
_default_field_key = ""
if DEBUG:
    _default_field_key = base64.urlsafe_b64encode(hashlib.sha256(SECRET_KEY.encode()).digest()).decode()
FIELD_ENCRYPTION_KEYS = env.list("FIELD_ENCRYPTION_KEY", default=[_default_field_key] if _default_field_key else [])

# --- Email (SLA notes) ----------------------------------------------------------
# EMAIL_URL as django-environ reads it: smtp+tls://user:password@host:587, consolemail:// (the
# default: notes go to the worker's log, which never carries message text).
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT_S", default=10)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="leadline@localhost")

# --- Celery -----------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS: dict = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "out"),
        "data_folder_out": str(_broker_dir / "out"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
else:
    # Fail fast when Redis is away: a webhook must answer in milliseconds and
    # leave the work to the sweeper rather than hang on a dead socket.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "socket_connect_timeout": env.float("CELERY_BROKER_CONNECT_TIMEOUT_S", default=0.5),
        "socket_timeout": env.float("CELERY_BROKER_SOCKET_TIMEOUT_S", default=2.0),
        # Longer than the hard limit of any task, so acks_late tasks are not
        # redelivered while still running.
        "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT_S", default=3600),
    }
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Keep a worker's database connection across tasks (Celery's Django fixup would otherwise close
# it around every task); config/celery_app.py applies Django's CONN_MAX_AGE/health checks instead.
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1000)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT_S", default=60)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT_S", default=90)
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# The project's periodic entries (``setup_periodic_tasks`` installs them; core does not import config).
BEAT_ENTRIES = "config.beat.beat_entries"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Availability refreshes (many, each up to AVAILABILITY_WORKSPACE_DEADLINE_S on a
# hanging page) get their own queue so they never delay drafts.
# Classification and drafts (I/O-bound: they wait on the LLM) get their own queue, served by a
# threads worker with many slots (README, Procfile); CPU- and database-heavy tasks stay on the
# default queue and are never starved by a reply burst.
# Sends (I/O-bound too: a batch waits on its provider calls) get a threads worker of their own,
# so a click's sends never wait behind a "Sync All" or a sweep (docs/sending.md).
CELERY_TASK_ROUTES = {
    "availability.tasks.*": {"queue": "availability"},
    "drafts.tasks.classify_and_draft": {"queue": "drafts"},
    "drafts.tasks.drafts_send": {"queue": "sends"},
    "drafts.tasks.draft_send": {"queue": "sends"},
}
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)

# --- Providers --------------------------------------------------------------
OPENAI_API_KEY = env.str("OPENAI_API_KEY", default="")
OPENAI_BASE_URL = env.str("OPENAI_BASE_URL", default="") or None
GHL_API_BASE_URL = env.str("GHL_API_BASE_URL", default="https://services.leadconnectorhq.com").rstrip("/")
GHL_BACKEND_BASE_URL = env.str("GHL_BACKEND_BASE_URL", default="https://backend.leadconnectorhq.com").rstrip("/")
CALENDLY_API_BASE_URL = env.str("CALENDLY_API_BASE_URL", default="https://api.calendly.com").rstrip("/")
# URLs from workspace settings (booking pages, the EmailBison base URL) may reach only public
# addresses; these hosts / IPs / CIDRs are let through anyway (tests and the demo: 127.0.0.1).
LEADLINE_OUTBOUND_ALLOWLIST = env.list("LEADLINE_OUTBOUND_ALLOWLIST", default=[])

# --- Tuning knobs (README lists each with its default) ---------------------
OPENAI_DRAFT_MODEL = env.str("OPENAI_DRAFT_MODEL", default="gpt-5-mini")
OPENAI_DRAFT_FALLBACK_MODEL = env.str("OPENAI_DRAFT_FALLBACK_MODEL", default="gpt-4.1-mini")
OPENAI_CLASSIFY_MODEL = env.str("OPENAI_CLASSIFY_MODEL", default="gpt-5-nano")
OPENAI_DRAFT_TOKEN_BUDGET_MULTIPLIER = env.float("OPENAI_DRAFT_TOKEN_BUDGET_MULTIPLIER", default=3.0)
OPENAI_DRAFT_MAX_OUTPUT_TOKENS_CAP = env.int("OPENAI_DRAFT_MAX_OUTPUT_TOKENS_CAP", default=8000)
OPENAI_DRAFT_TIMEOUT_S = env.float("OPENAI_DRAFT_TIMEOUT_S", default=25.0)
OPENAI_CLASSIFY_TIMEOUT_S = env.float("OPENAI_CLASSIFY_TIMEOUT_S", default=10.0)
# OpenAI's rate limits, shared through RATE_LIMIT_REDIS_URL by every process (one limit per API key
# and model): the starting values until the API announces its own (x-ratelimit-* headers).
OPENAI_REQUESTS_PER_INTERVAL = env.int("OPENAI_REQUESTS_PER_INTERVAL", default=500)
OPENAI_RATE_LIMIT_INTERVAL_S = env.float("OPENAI_RATE_LIMIT_INTERVAL_S", default=60.0)
# Every process stops when the API says fewer tokens than this remain, until its token reset.
OPENAI_TOKENS_RESERVE = env.int("OPENAI_TOKENS_RESERVE", default=10000)
# The longest one call waits for its turn under the rate limit (oldest inbound first); this wait
# does not count against the draft's own deadline.
OPENAI_QUEUE_MAX_WAIT_S = env.float("OPENAI_QUEUE_MAX_WAIT_S", default=300.0)
DRAFT_TASK_SOFT_TIME_LIMIT_S = env.int("DRAFT_TASK_SOFT_TIME_LIMIT_S", default=90)
DRAFT_TASK_TIME_LIMIT_S = env.int("DRAFT_TASK_TIME_LIMIT_S", default=120)
DRAFT_CONTEXT_MESSAGES = env.int("DRAFT_CONTEXT_MESSAGES", default=10)
# One LLM call answers the tag and the reply of a message no fast path decides (drafts/services/onecall.py);
# false: a classification call, then a draft call.
DRAFT_ONE_CALL = env.bool("DRAFT_ONE_CALL", default=True)
DRAFT_SWEEP_AFTER_S = env.int("DRAFT_SWEEP_AFTER_S", default=120)
# Sending approved drafts (drafts.tasks.drafts_send): the provider call's own deadline sits
# inside the task's soft limit.
DRAFT_SEND_TIMEOUT_S = env.float("DRAFT_SEND_TIMEOUT_S", default=20.0)
# Drafts a send task takes at once (claimed together, their provider calls made at the same
# time in as many threads, finished together): a click on a hundred drafts is a few tasks.
DRAFT_SEND_BATCH_SIZE = env.int("DRAFT_SEND_BATCH_SIZE", default=50)
DRAFT_SEND_TASK_SOFT_TIME_LIMIT_S = env.int("DRAFT_SEND_TASK_SOFT_TIME_LIMIT_S", default=45)
DRAFT_SEND_TASK_TIME_LIMIT_S = env.int("DRAFT_SEND_TASK_TIME_LIMIT_S", default=60)
# A "sending" row older than the hard limit plus this belongs to no live worker.
DRAFT_SEND_LEASE_MARGIN_S = env.int("DRAFT_SEND_LEASE_MARGIN_S", default=30)

GHL_REQUESTS_PER_10S = env.int("GHL_REQUESTS_PER_10S", default=90)
GHL_MAX_429_RETRIES = env.int("GHL_MAX_429_RETRIES", default=5)
GHL_FETCH_TIMEOUT_S = env.float("GHL_FETCH_TIMEOUT_S", default=15.0)
SYNC_ALL_CONCURRENCY = env.int("SYNC_ALL_CONCURRENCY", default=3)
# One lead's sync (all its GHL calls, rate-limit waits included) must end within this.
GHL_SYNC_LEAD_DEADLINE_S = env.float("GHL_SYNC_LEAD_DEADLINE_S", default=180.0)
# The "Sync all now" / periodic sync task's limits (a workspace of 80 leads takes ~25 s at GHL's limit).
GHL_SYNC_TASK_SOFT_TIME_LIMIT_S = env.int("GHL_SYNC_TASK_SOFT_TIME_LIMIT_S", default=1800)
GHL_SYNC_TASK_TIME_LIMIT_S = env.int("GHL_SYNC_TASK_TIME_LIMIT_S", default=1860)
# "Sync all now" splits a run into this many Celery tasks (worker processes taking part).
GHL_SYNC_SHARDS = env.int("GHL_SYNC_SHARDS", default=1)
# Periodic incremental sync of every active GHL workspace, every this many seconds; 0 (default) = off.
GHL_SYNC_INTERVAL_S = env.int("GHL_SYNC_INTERVAL_S", default=0)
# Where rate limiters keep their shared state: every process and host on the same Redis shares
# each limit. Defaults to the broker when it is Redis; empty (the filesystem broker) = per process.
RATE_LIMIT_REDIS_URL = env.str(
    "RATE_LIMIT_REDIS_URL", default=CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else ""
)

AVAILABILITY_REFRESH_MINUTES = env.int("AVAILABILITY_REFRESH_MINUTES", default=10)
AVAILABILITY_FETCH_TIMEOUT_S = env.float("AVAILABILITY_FETCH_TIMEOUT_S", default=8.0)
AVAILABILITY_WORKSPACE_DEADLINE_S = env.float("AVAILABILITY_WORKSPACE_DEADLINE_S", default=20.0)
AVAILABILITY_DAYS_AHEAD = env.int("AVAILABILITY_DAYS_AHEAD", default=14)
AVAILABILITY_STALE_AFTER_MINUTES = env.int("AVAILABILITY_STALE_AFTER_MINUTES", default=60)

DEFAULT_PHONE_REGION = env.str("DEFAULT_PHONE_REGION", default="US")

WEBHOOK_MAX_BODY_BYTES = env.int("WEBHOOK_MAX_BODY_BYTES", default=1024 * 1024)
WEBHOOK_SIGNATURE_MAX_AGE_S = env.int("WEBHOOK_SIGNATURE_MAX_AGE_S", default=300)
# GHL's Ed25519 public key for X-GHL-Signature (PEM, or base64 of the 32 raw bytes); empty = not configured.
GHL_WEBHOOK_ED25519_PUBLIC_KEY = env.str("GHL_WEBHOOK_ED25519_PUBLIC_KEY", default="")
DATA_UPLOAD_MAX_MEMORY_SIZE = WEBHOOK_MAX_BODY_BYTES + 1024

# --- DRF --------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "UNAUTHENTICATED_USER": None,
}

# --- Logging and error reporting --------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact_secrets": {"()": "core.redaction.RedactingFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
            "formatter": "plain",
            "filters": ["redact_secrets"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "celery": {"level": "INFO"},
        # The OpenAI SDK's HTTP client logs one INFO line per request (URL and status):
        # noise at our volume, and formatting + redacting it costs on the draft path.
        # Our wrapper logs failures itself (drafts.llm).
        "httpx": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},
        "openai": {"level": "WARNING"},
    },
}

SENTRY_DSN = env.str("SENTRY_DSN", default="")
if SENTRY_DSN:
    from core.sentry import sentry_init

    sentry_init(dsn=SENTRY_DSN, environment=env.str("SENTRY_ENVIRONMENT", default="production"))

"""The one settings object of the project: every module reads configuration from here."""

from __future__ import annotations

import logging
import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from config.passwords import password_problem, secret_key_problem

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VAR_DIR = PROJECT_ROOT / "var"

# Values that mean "nobody chose this": refused when APP_ENV=production.
PLACEHOLDER_SECRETS = {"", "changethis", "change-me", "changeme", "secret", "password"}


class Settings(BaseSettings):
    """Configuration from environment variables (and an optional `.env` file)."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    APP_ENV: Literal["development", "production"] = "development"
    HOST: str = "127.0.0.1"
    PORT: int = 8000
    # Worker processes of `python -m api` on that one port (uvicorn's supervisor). Each loads
    # its own model (docs/deploy.md, "What to size": one per core, memory x N); every piece of
    # shared state is in Postgres or RATE_LIMIT_STORAGE_URI, which must then be redis://.
    API_WORKERS: int = Field(default=1, ge=1, le=64)
    LOG_LEVEL: str = "INFO"

    # Auth
    # Unset or a placeholder in development: a random key generated once per checkout into
    # var/secret_key. Production refuses to start without a long, high-entropy key.
    SECRET_KEY: str = ""
    ACCESS_TOKEN_EXPIRE_MINUTES: int = Field(default=60, ge=1)
    FIRST_ADMIN_USERNAME: str = "admin"
    FIRST_ADMIN_PASSWORD: str = "changethis"
    # Login throttle (docs/security.md): failed or in-flight attempts counted per window of
    # LOGIN_LOCKOUT_SECONDS for each (username, client address) pair, each client address and
    # each username; a key over its limit is refused with 429 for LOGIN_LOCKOUT_SECONDS,
    # doubling at each repeat up to LOGIN_LOCKOUT_MAX_SECONDS.
    LOGIN_MAX_FAILURES: int = Field(default=5, ge=1)
    LOGIN_ADDRESS_MAX_FAILURES: int = Field(default=20, ge=1)
    LOGIN_USERNAME_MAX_FAILURES: int = Field(default=50, ge=1)
    LOGIN_LOCKOUT_SECONDS: int = Field(default=300, ge=1)
    LOGIN_LOCKOUT_MAX_SECONDS: int = Field(default=3600, ge=1)
    # Proxies whose X-Forwarded-For gives the client address (uvicorn's forwarded_allow_ips:
    # comma-separated addresses or networks, "*" for any). Only loopback by default: an API
    # port reachable directly must not trust the header, or anyone picks their own address.
    FORWARDED_ALLOW_IPS: str = "127.0.0.1"
    # Password policy for /register, password changes and FIRST_ADMIN_PASSWORD in production.
    PASSWORD_MIN_LENGTH: int = Field(default=10, ge=8, le=128)
    PASSWORD_MIN_STRENGTH: int = Field(default=3, ge=0, le=4)  # zxcvbn score
    # Argon2id: OWASP's 19 MiB / 2 passes (~40 ms on one core), at most PASSWORD_HASH_CONCURRENCY
    # at a time per process; PASSWORD_HASH_QUEUE more wait up to PASSWORD_HASH_WAIT_SECONDS,
    # the rest get 503 with Retry-After.
    PASSWORD_HASH_MEMORY_KIB: int = Field(default=19_456, ge=8_192, le=1_048_576)
    PASSWORD_HASH_TIME_COST: int = Field(default=2, ge=1, le=20)
    PASSWORD_HASH_CONCURRENCY: int = Field(default=2, ge=1, le=64)
    PASSWORD_HASH_QUEUE: int = Field(default=8, ge=0, le=1000)
    PASSWORD_HASH_WAIT_SECONDS: float = Field(default=5.0, gt=0, le=60)

    # Database: SQLite file under var/ by default; any SQLAlchemy URL (Postgres in production).
    DATABASE_URL: str = f"sqlite:///{VAR_DIR / 'app.db'}"

    # Object stores: a local folder by default, or s3://bucket/prefix (endpoint from boto3's
    # standard AWS_ENDPOINT_URL, so MinIO or a local S3 server work unchanged).
    MODEL_STORE_URI: str = str(VAR_DIR / "model-store")
    MODEL_CACHE_DIR: Path = VAR_DIR / "model-cache"
    # A pretrained backbone's features, kept between trainings (models/training/features.py):
    # the weekly retraining computes them only for the products that are new.
    FEATURE_CACHE_DIR: Path = VAR_DIR / "feature-cache"
    MODEL_POLL_SECONDS: float = Field(default=30.0, ge=0)
    # When the production version cannot be loaded at startup, how many earlier versions
    # (pointer history, then cache) the API tries before starting without a model; 0: none.
    MODEL_FALLBACK_TRIES: int = Field(default=3, ge=0)
    # Shadow evaluation (api/shadow.py): the share of /predict requests the shadowed version
    # (the model store's shadow pointer) also answers, off the request path.
    SHADOW_SHARE: float = Field(default=0.2, ge=0, le=1)
    IMAGE_STORE_URI: str = str(VAR_DIR / "images")
    DATA_STORE_URI: str = str(VAR_DIR / "datasets")

    # Request limits (documented in the README; violations answer 413/422, never 500).
    MAX_TEXT_CHARS: int = Field(default=20_000, ge=1)
    MAX_IMAGE_BYTES: int = Field(default=10 * 1024 * 1024, ge=1)
    MAX_IMAGE_PIXELS: int = Field(default=40_000_000, ge=1)
    # Memory an image may take once decoded (width x height x bytes per pixel of its mode),
    # checked before decoding: a 77 kB PNG can declare 6300x6300 16-bit pixels (79 MB).
    MAX_IMAGE_DECODED_BYTES: int = Field(default=64 * 1024 * 1024, ge=1)
    # JPEGs over this many pixels are decoded at 1/2, 1/4 or 1/8 scale (still at least this
    # many pixels: far more than the models' input), which is faster and smaller.
    IMAGE_DRAFT_PIXELS: int = Field(default=4_000_000, ge=1)
    # Images decoded at once; the others wait (without holding a worker thread).
    MAX_CONCURRENT_DECODES: int = Field(default=2, ge=1)
    # A request body must keep arriving: at most this long between two chunks (408 otherwise)...
    BODY_IDLE_TIMEOUT_SECONDS: float = Field(default=10.0, gt=0)
    # ...and all of it within this long.
    BODY_READ_TIMEOUT_SECONDS: float = Field(default=60.0, gt=0)
    # An oversized body is read and discarded up to this many bytes before the 413, so that
    # ordinary clients (which send the whole body before reading) get the answer, not a reset.
    BODY_DRAIN_MAX_BYTES: int = Field(default=64 * 1024 * 1024, ge=0)
    # Uvicorn (`python -m api`): idle keep-alive connections are closed after this long, and
    # past this many connections and requests in progress new requests get a 503.
    KEEP_ALIVE_TIMEOUT_SECONDS: int = Field(default=5, ge=1)
    MAX_CONCURRENT_CONNECTIONS: int = Field(default=1000, ge=1)

    # Prediction log writer (docs/security.md: what is promised about logs under each fault)
    LOG_BATCH_SIZE: int = Field(default=200, ge=1)
    LOG_FLUSH_SECONDS: float = Field(default=0.5, gt=0)
    LOG_QUEUE_MAX: int = Field(default=100_000, ge=1)
    # Spill files (a full queue, a shutdown with the database down) and the dead-letter file.
    LOG_SPILL_DIR: Path = VAR_DIR / "prediction-logs"
    # At shutdown, how long the writer tries the database before spilling what is left.
    LOG_DRAIN_SECONDS: float = Field(default=10.0, ge=0, le=60)
    # Uvicorn's wait for in-flight requests at shutdown; with LOG_DRAIN_SECONDS it must fit in
    # the orchestrator's grace (compose stop_grace_period, k8s terminationGracePeriodSeconds: 30 s).
    SHUTDOWN_GRACE_SECONDS: float = Field(default=10.0, ge=0, le=60)
    # The title as the seller typed it is kept in the log (cut to this many characters; 0: not
    # kept) so that a bad prediction can be investigated, and cleared after this many days by
    # the API's hourly retention task (api/retention.py; 0: cleared at the next run).
    LOG_TITLE_MAX_CHARS: int = Field(default=200, ge=0, le=2000)
    LOG_TITLE_RETENTION_DAYS: float = Field(default=30.0, ge=0)
    LOG_TITLE_PURGE_SECONDS: float = Field(default=3600.0, gt=0)

    # Database outages: routes that need the database answer 503 with this Retry-After.
    DB_RETRY_AFTER_SECONDS: int = Field(default=5, ge=1, le=300)
    DB_CONNECT_TIMEOUT_SECONDS: int = Field(default=5, ge=1, le=60)
    # While the database is unreachable, /predict still authenticates a token whose user was
    # seen active within this many seconds (0: never; /predict then answers 503 too).
    USER_CACHE_SECONDS: float = Field(default=300.0, ge=0, le=3600)

    # Per-user rate limits (the `limits` package's notation: "120/minute", "10/second;500/hour").
    # memory:// holds per process; redis://host:6379/N shares them across workers and replicas.
    RATE_LIMIT_STORAGE_URI: str = "memory://"
    RATE_LIMIT_PREDICT: str = "120/minute"
    RATE_LIMIT_PRODUCTS: str = "30/minute"
    # POST /predict/batch: at most this many items per call; each item counts as one request
    # against RATE_LIMIT_PREDICT (a batch over the remaining allowance is refused whole, 429).
    BATCH_MAX_ITEMS: int = Field(default=100, ge=1, le=1000)

    # Operations endpoints. /metrics: public in development; in production it needs this bearer
    # token (and answers 404 while none is set). /docs, /redoc and /openapi.json can be turned off.
    METRICS_TOKEN: str | None = None
    API_DOCS_ENABLED: bool = True

    # Pipelines (Airflow tasks, `make run` bootstrap)
    # `make run` on an empty model store: a challenge-layout folder (X_train_update.csv,
    # Y_train_CVw08PX.csv, images/image_train/) to import and train on; unset, the synthetic
    # catalogue (and the model is marked a demo).
    BOOTSTRAP_DATA: Path | None = None
    API_URL: str = "http://127.0.0.1:8000"
    # Where the retraining DAG's training runs: in the Airflow worker, in TRAIN_IMAGE through the
    # Docker socket (compose), or in a pod of TRAIN_IMAGE of its own (KubernetesPodOperator).
    TRAIN_MODE: Literal["inprocess", "docker", "kubernetes"] = "inprocess"
    TRAIN_IMAGE: str = "rakuten-classifier-train:latest"
    # Every model's epochs (the retraining and `make run`'s first model): unset, the hyperparameters'.
    TRAIN_EPOCHS: int | None = None
    TRAIN_QUICK: bool = False
    MIN_TRAINING_ROWS: int = Field(default=200, ge=1)
    GATE_MIN_IMPROVEMENT: float = 0.0
    GATE_MAX_RECALL_DROP: float = 0.10
    # Class recalls are judged only on classes with at least this many held-out products.
    GATE_MIN_CLASS_SUPPORT: int = Field(default=10, ge=1)
    # The gate's live holdout: products confirmed in the last GATE_LIVE_DAYS that the candidate
    # did not train on; judged from GATE_MIN_LIVE_ROWS of them, where the candidate may not lose
    # more than GATE_MAX_LIVE_DROP weighted F1 to production.
    # GATE_SHADOW=first: a candidate the gate would promote is shadowed instead, and promoted by
    # the next run of the same interval if its live hit rate on the shadow window is not worse.
    GATE_SHADOW: Literal["off", "first"] = "off"
    GATE_LIVE_DAYS: float = Field(default=7.0, gt=0)
    GATE_MIN_LIVE_ROWS: int = Field(default=30, ge=1)
    GATE_MAX_LIVE_DROP: float = Field(default=0.02, ge=0, le=1)
    # A candidate better on the live holdout is judged on the fixed split's own categories (its
    # closed view); on the split as it is, each kind may lose at most this much weighted F1: the
    # price of learning categories the split does not hold (pipelines/gate.py).
    GATE_MAX_NEW_CLASS_COST: float = Field(default=0.05, ge=0, le=1)
    # Share of products held out for evaluation, chosen by a hash of the product id so that the
    # same products are held out in every snapshot (candidate and production compared fairly).
    EVAL_FRACTION: float = Field(default=0.2, gt=0, lt=1)
    # Decode every product image during validation (the slowest check; off only to debug).
    VALIDATE_IMAGES: bool = True
    # The account the retraining DAG signs in with to ask the API to reload (default: the first admin).
    API_ADMIN_USERNAME: str | None = None
    API_ADMIN_PASSWORD: str | None = None
    API_TIMEOUT_SECONDS: float = Field(default=30.0, gt=0)
    # TRAIN_MODE=docker: the Docker network the training container joins (to reach S3/MinIO).
    TRAIN_DOCKER_NETWORK: str | None = None
    # TRAIN_MODE=docker: the named volume that keeps the backbone's features between training
    # containers (mounted at /app/var/feature-cache); empty: none, every run computes them.
    TRAIN_FEATURE_CACHE_VOLUME: str = "rakuten-feature-cache"

    # Monitoring DAG: a report is flagged when a figure crosses one of these thresholds.
    MONITOR_TOP_K: int = Field(default=5, ge=1)
    MONITOR_MIN_REQUESTS: int = Field(default=50, ge=1)  # fewer: drift is not judged
    MONITOR_MIN_CONFIRMED: int = Field(default=20, ge=1)  # fewer: hit rates are not judged
    MONITOR_MIN_TOP1_HIT_RATE: float = Field(default=0.60, ge=0, le=1)
    MONITOR_MIN_TOPK_HIT_RATE: float = Field(default=0.85, ge=0, le=1)
    MONITOR_MIN_MEAN_CONFIDENCE: float = Field(default=0.40, ge=0, le=1)
    MONITOR_MAX_CLASS_PSI: float = Field(default=0.20, gt=0)
    MONITOR_MAX_INPUT_PSI: float = Field(default=0.20, gt=0)
    MONITOR_MAX_IMAGE_SHARE_DELTA: float = Field(default=0.15, gt=0, le=1)
    # Live coverage of the suggestion sets: flagged when under MONITOR_SET_COVERAGE (what the
    # sets promise) by more than MONITOR_COVERAGE_Z binomial standard errors.
    MONITOR_SET_COVERAGE: float = Field(default=0.95, gt=0, lt=1)
    MONITOR_COVERAGE_Z: float = Field(default=2.0, ge=0)
    # Label quality (pipelines/label_quality.py, in the retraining's validate task): a seller
    # with at least LABEL_QUALITY_MIN_CONFIRMATIONS confirmations whose disagreement with the
    # model and with the other sellers exceeds theirs by LABEL_QUALITY_MAX_EXCESS (two-proportion
    # z above LABEL_QUALITY_Z) has their unverified products quarantined until an admin verifies.
    LABEL_QUALITY_CHECK: bool = True
    LABEL_QUALITY_MIN_CONFIRMATIONS: int = Field(default=20, ge=1)
    LABEL_QUALITY_MAX_EXCESS: float = Field(default=0.30, ge=0, le=1)
    LABEL_QUALITY_Z: float = Field(default=4.0, ge=0)
    # Trigger the retraining DAG when a report is flagged (off: flags are only reported).
    MONITOR_TRIGGER_RETRAIN: bool = False

    @model_validator(mode="after")
    def _refuse_placeholders_in_production(self) -> Settings:
        if self.APP_ENV != "production":
            # Never sign with a key printed in .env.example or the docs.
            if self.SECRET_KEY.strip().lower() in PLACEHOLDER_SECRETS:
                self.SECRET_KEY = development_secret_key(VAR_DIR / "secret_key")
            return self
        for name in ("SECRET_KEY", "FIRST_ADMIN_PASSWORD"):
            if getattr(self, name).strip().lower() in PLACEHOLDER_SECRETS:
                raise ValueError(
                    f"{name} is missing or a placeholder; set a real value when APP_ENV=production"
                )
        if problem := secret_key_problem(self.SECRET_KEY):
            raise ValueError(problem)
        problem = password_problem(
            self.FIRST_ADMIN_PASSWORD,
            username=self.FIRST_ADMIN_USERNAME,
            min_length=self.PASSWORD_MIN_LENGTH,
            min_score=self.PASSWORD_MIN_STRENGTH,
        )
        if problem:
            raise ValueError(f"FIRST_ADMIN_PASSWORD fails the password policy: {problem}")
        if self.API_WORKERS > 1 and self.RATE_LIMIT_STORAGE_URI.startswith("memory://"):
            # Each worker would count on its own: every limit N times looser than it says.
            raise ValueError("API_WORKERS > 1 needs a shared RATE_LIMIT_STORAGE_URI (redis://...)")
        return self

    @field_validator("RATE_LIMIT_PREDICT", "RATE_LIMIT_PRODUCTS")
    @classmethod
    def _rate_limit_notation(cls, value: str) -> str:
        from limits import parse_many  # a light import, only when settings are built

        try:
            parse_many(value)
        except ValueError as exc:
            raise ValueError(f"not a rate limit such as '120/minute': {value!r}") from exc
        return value


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (cached; tests build their own `Settings`)."""
    return Settings()


def development_secret_key(path: Path) -> str:
    """The checkout's own signing key for development, generated into `path` on first use.

    A key published in the repository or its docs would let anyone sign tokens for a
    developer's instance; a random one per checkout cannot be guessed, and it survives
    restarts so tokens do too. Created atomically (hard link of a finished file), so
    processes starting together agree on one key.
    """
    try:
        key = path.read_text().strip()
        if len(key) >= 32:
            return key
    except FileNotFoundError:
        pass
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_urlsafe(48) + "\n")
        try:
            os.link(temporary, path)
        except FileExistsError:  # another process won the race, or a short key is there
            if len(path.read_text().strip()) < 32:
                os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
        return path.read_text().strip()
    except OSError:
        # A read-only checkout: a key for this process only (tokens end with it).
        logger.warning("cannot write %s; signing tokens with a key for this process only", path)
        return secrets.token_urlsafe(48)

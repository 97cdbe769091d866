"""The one settings object of the project: every module reads configuration from here."""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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
    LOG_LEVEL: str = "INFO"

    # Auth
    SECRET_KEY: str = "changethis"
    ACCESS_TOKEN_EXPIRE_MINUTES: int = Field(default=60, ge=1)
    FIRST_ADMIN_USERNAME: str = "admin"
    FIRST_ADMIN_PASSWORD: str = "changethis"
    LOGIN_MAX_FAILURES: int = Field(default=5, ge=1)
    LOGIN_LOCKOUT_SECONDS: int = Field(default=300, ge=1)

    # Database: SQLite file under var/ by default; any SQLAlchemy URL (Postgres in production).
    DATABASE_URL: str = f"sqlite:///{VAR_DIR / 'app.db'}"

    # Object stores: a local folder by default, or s3://bucket/prefix (endpoint from boto3's
    # standard AWS_ENDPOINT_URL, so MinIO or a local S3 server work unchanged).
    MODEL_STORE_URI: str = str(VAR_DIR / "model-store")
    MODEL_CACHE_DIR: Path = VAR_DIR / "model-cache"
    MODEL_POLL_SECONDS: float = Field(default=30.0, ge=0)
    # When the production version cannot be loaded at startup, how many earlier versions
    # (pointer history, then cache) the API tries before starting without a model; 0: none.
    MODEL_FALLBACK_TRIES: int = Field(default=3, ge=0)
    IMAGE_STORE_URI: str = str(VAR_DIR / "images")
    DATA_STORE_URI: str = str(VAR_DIR / "datasets")

    # Request limits (documented in the README; violations answer 413/422, never 500).
    MAX_TEXT_CHARS: int = Field(default=20_000, ge=1)
    MAX_IMAGE_BYTES: int = Field(default=10 * 1024 * 1024, ge=1)
    MAX_IMAGE_PIXELS: int = Field(default=40_000_000, ge=1)

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

    # Operations endpoints. /metrics: public in development; in production it needs this bearer
    # token (and answers 404 while none is set). /docs, /redoc and /openapi.json can be turned off.
    METRICS_TOKEN: str | None = None
    API_DOCS_ENABLED: bool = True

    # Pipelines (Airflow tasks, `make run` bootstrap)
    API_URL: str = "http://127.0.0.1:8000"
    TRAIN_MODE: Literal["inprocess", "docker"] = "inprocess"
    TRAIN_IMAGE: str = "rakuten-classifier-train:latest"
    TRAIN_EPOCHS: int | None = None
    TRAIN_QUICK: bool = False
    MIN_TRAINING_ROWS: int = Field(default=200, ge=1)
    GATE_MIN_IMPROVEMENT: float = 0.0
    GATE_MAX_RECALL_DROP: float = 0.10
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
    # Trigger the retraining DAG when a report is flagged (off: flags are only reported).
    MONITOR_TRIGGER_RETRAIN: bool = False

    @model_validator(mode="after")
    def _refuse_placeholders_in_production(self) -> Settings:
        if self.APP_ENV == "production":
            for name in ("SECRET_KEY", "FIRST_ADMIN_PASSWORD"):
                value = getattr(self, name)
                if value.strip().lower() in PLACEHOLDER_SECRETS:
                    raise ValueError(
                        f"{name} is missing or a placeholder; set a real value when APP_ENV=production"
                    )
            if len(self.SECRET_KEY) < 32:
                raise ValueError("SECRET_KEY must be at least 32 characters when APP_ENV=production")
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

    @property
    def is_sqlite(self) -> bool:
        return self.DATABASE_URL.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (cached; tests build their own `Settings`)."""
    return Settings()


def generate_secret() -> str:
    """A fresh random secret suitable for SECRET_KEY."""
    return secrets.token_urlsafe(48)

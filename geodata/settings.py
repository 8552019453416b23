"""All runtime settings in one place, read from ``HARMSPOT_*`` environment variables.

Engines (``geodata``, ``hotspots``, ``rtm``) take explicit arguments; only the doors (``app`` and the CLI)
build a :class:`Settings` and pass its values down.
"""
from __future__ import annotations

from functools import lru_cache
import os
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DIR = PACKAGE_ROOT / "sample"
DEFAULTS_DIR = PACKAGE_ROOT / "geodata" / "defaults"  # shipped tables (open harm weights, key-date sets)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HARMSPOT_", extra="ignore")

    data_dir: Path = Field(Path("./data"), description="Folder holding the embedded store (harmspot.duckdb).")
    harm_weights: Path | None = Field(
        None,
        description="A licensed harm table to load at start-up (e.g. the CCHI 2020 values CSV). "
        "Without it the open default table shipped with harmspot is used.",
    )
    harm_weights_name: str = Field("cchi-2020", description="Name under which HARMSPOT_HARM_WEIGHTS is loaded.")
    max_upload_mb: int = Field(200, description="Largest accepted upload (HTTP 413 above it).")
    # ---- ingest limits (docs/ingest.md "Memory bound"); they apply to uploads and `harmspot ingest` alike
    max_inflated_mb: int = Field(2048, ge=1, description="Most bytes one batch may inflate to after gzip/zip "
                                 "decompression, over all its files (HTTP 413 above it).")
    max_batch_rows: int = Field(20_000_000, ge=1, description="Most rows one batch may hold (HTTP 413 above it).")
    ingest_block_mb: int = Field(16, ge=1, le=1024, description="CSV bytes parsed and stored per step of an ingest; "
                                 "the memory an ingest needs grows with this, not with the file.")
    duckdb_memory_mb: int | None = Field(1024, ge=64, description="DuckDB's buffer memory limit (it spills to "
                                         "disk beyond it); with the streamed ingest this bounds an ingest's memory. "
                                         "Unset (empty) = DuckDB's default, 80 % of RAM.")
    oldest_month: str = Field("1990-01", pattern=r"^\d{4}-(0[1-9]|1[0-2])$",
                              description="Occurrences before this month are rejected per row (so are those after "
                              "the day of ingest).")
    default_resolution: int = Field(10, ge=7, le=11)
    host: str = "127.0.0.1"
    port: int = 8000
    load_sample: bool = Field(True, description="Ingest the bundled Essex sample at start-up if the store is empty.")
    tile_url: str | None = Field(None, description="Optional XYZ tile URL for the map; none by default (offline).")
    # ---- serving (docs/serving.md)
    cache_mb: int = Field(256, ge=0, description="Memory for computed results (harm spots, Gi*, emerging, spikes, "
                          "tasking, OGC pages), reused until the next write; least recently used dropped first. "
                          "0: no result cache.")
    max_computing: int | None = Field(None, ge=0, description="Results computed at once (harm spots, Gi*, emerging, "
                                      "spikes, tasking, OGC pages); more requests for uncached results queue first "
                                      "come, first served. Cached answers never queue. Default: twice the CPUs "
                                      "(4 on 2 cores); 0: no limit. See docs/serving.md.")

    def computing_slots(self) -> int:
        """``max_computing``, or twice the CPUs this process may use when it is not set."""
        if self.max_computing is not None:
            return self.max_computing
        return 2 * (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
    loop_lag_warn_ms: int = Field(250, ge=0, description="Log a warning when the event loop is blocked longer than "
                                  "this (a blocking call in async code); 0: no watchdog.")
    default_dataset: str | None = Field(
        None, description="Dataset used when a request names none (/hotspots, /tasking, the map, the OGC harm-spots "
        "layer). Unset or not loaded: the first dataset loaded. A later upload never changes the default.")
    protective_marking: str = Field(
        "OFFICIAL", max_length=80, description="Government Security Classification line printed on the map and the "
        "patrol sheets (e.g. OFFICIAL, OFFICIAL-SENSITIVE).")
    # ---- access, audit and disclosure (docs/security.md)
    keys_mode: str = Field("auto", pattern="^(auto|required)$",
                           description="auto: local demo mode (loopback only, no keys) while no API key exists; "
                           "required: always demand an X-API-Key, even before any key is created.")
    cors_origins: str = Field("", description="Comma-separated browser origins allowed by CORS; empty = CORS closed.")
    audit: bool = Field(True, description="Write an audit row (who, when, what, dataset, status) per data request.")
    audit_linger_ms: int = Field(250, ge=0, le=5000, description="After an audit row is queued, wait up to this "
                                 "long for more before inserting them in one commit (a commit costs a few ms of "
                                 "CPU however few rows it holds). A kill -9 loses the rows of this window; GET "
                                 "/audit and a normal stop store them first.")
    audit_refusal_window_s: int = Field(60, ge=1, le=3600, description="Refused requests (401/403/429) of one "
                                        "client, status and key within this many seconds share one audit row "
                                        "(the first has its own; the rest one row with a count).")
    admin_key: SecretStr | None = Field(None, description="First start that must be keyed (non-loopback bind or "
                                        "keys_mode=required) with no key yet: store this admin key "
                                        "(hs_<8 hex>_<secret>, e.g. from `harmspot keys generate`) instead of "
                                        "generating and printing one.")
    admin_key_file: Path | None = Field(None, description="As HARMSPOT_ADMIN_KEY, read from this file (a Docker or "
                                        "Kubernetes secret).")
    disclosure: str = Field("per-key", pattern="^(per-key|public)$",
                            description="public: every data read of this deployment is public output, whoever "
                            "asks, and doors without a public form are refused; per-key: only public keys (and "
                            "mode=public) get public output (docs/security.md#public-output-mode).")
    public_min_count: int = Field(5, ge=1, description="Public output: cells with fewer offences are withheld.")
    public_resolution: int = Field(8, ge=7, le=11, description="Public output: the one H3 resolution published "
                                   "(every public answer is at it; two would let parents minus children be "
                                   "differenced).")
    public_period: str = Field("month", pattern="^(month|quarter)$", description="Public output: whole calendar "
                               "months or whole calendar quarters (never both: a quarter minus two months is the "
                               "third).")
    public_presets: str = Field("all-crime", description="Public output: the offence presets published, comma-"
                                "separated; they must share no offence group or category (checked at start).")
    rtm_max_queued_per_key: int = Field(2, ge=1, le=100, description="RTM runs one API key may have queued or "
                                        "running at once (429 with Retry-After beyond).")
    rtm_max_queued: int = Field(20, ge=1, le=1000, description="RTM runs queued or running at once, all keys "
                                "together (429 beyond).")
    # ---- GPS-measured dosage (docs/patrol-planning.md#gps-measured-dosage, docs/security.md#officer-location-pings)
    gps_ping_retention_days: int = Field(0, ge=0, le=366, description="Days raw officer location pings are kept "
                                         "after upload (0: never stored, only the visits derived from them).")
    gps_max_pings: int = Field(1_000_000, ge=1000, le=20_000_000, description="Most pings in one GPS upload.")

    @property
    def public_preset_list(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.public_presets.split(",") if p.strip())

    @property
    def store_path(self) -> Path:
        return self.data_dir / "harmspot.duckdb"

    def open_store(self, read_only: bool = False):
        """The embedded store at :attr:`store_path`, with these settings' DuckDB memory limit."""
        from geodata.store import Store

        return Store(self.store_path, read_only=read_only, memory_limit_mb=self.duckdb_memory_mb)

    def ingest_limits(self):
        """The :class:`geodata.readers.IngestLimits` these settings give."""
        from geodata.readers import IngestLimits

        block = self.ingest_block_mb << 20
        return IngestLimits(max_inflated_bytes=self.max_inflated_mb << 20, max_rows=self.max_batch_rows,
                            block_bytes=block, chunk_rows=max(10_000, block // 256), oldest_month=self.oldest_month)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()

"""Running jobs on Ray Data: the requests are a dataset, each worker an actor with the model.

``ray.data.from_items`` holds the pending requests; ``map_batches(Worker, compute=
ActorPoolStrategy(size=workers))`` runs them: each actor loads the model once and serves every
batch it gets through the continuous-batching scheduler (``local.serve``). The driver reads the
results as batches finish and writes them itself, so resuming and the exactly-once guarantee
live in one place (``outputs``). With per-request seeds and the scheduler's batch invariance a
request's lines are the same whichever worker, batch or engine ran it.

A local cluster the driver starts (no ``--address``, no ``RAY_ADDRESS``) goes with the driver,
even when the driver is killed (SIGKILL): ``samplekit.jobs.reaper`` ends the processes Ray
leaves behind (its agents).

Faults: an actor that dies (a crashed process, a lost node) is restarted and its batch retried,
at most ``RETRIES`` times each (Ray's ``max_restarts`` / ``max_task_retries``); a batch's
results reach the driver only when the whole batch is done, so a retried batch is never written
twice (and the driver drops any line it already wrote). When the retries run out, the job stops
with an error; what was written stays, and the same command resumes. A samplekit error in a
worker (a bad checkpoint, say) comes back as that error, not as a Ray traceback.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
from collections.abc import Callable, Iterator

from samplekit.errors import SampleKitError
from samplekit.jobs import JobError
from samplekit.jobs.inputs import Job
from samplekit.jobs.models import ModelSpec
from samplekit.messages import one_line

INSTALL = "pip install 'samplekit-lm[ray]'"
RETRIES = 3  # restarts of a dead actor, and retries of its batch
CRASH_ENV = "SAMPLEKIT_TEST_RAY_CRASH"  # tests only: a path; the first batch to create it kills its actor


class MissingRayError(SampleKitError, ImportError):
    """Ray Data is not installed."""


def require_ray():
    """The ray module with ray.data, or a MissingRayError saying what to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise MissingRayError(f"--engine ray needs Ray Data, which is not installed ({exc}): {INSTALL}") from None
    return ray


class Worker:
    """A Ray Data actor: loads the model once, then serves batches of pickled Jobs. ``settings``
    (a class attribute of a subclass made per job): ``model`` (a ModelSpec), ``batch_size``,
    ``crash_marker`` (tests only)."""

    settings: dict = {}

    def __init__(self):
        model: ModelSpec = self.settings["model"]
        self.batch_size, self.crash_marker = self.settings["batch_size"], self.settings.get("crash_marker")
        self.failure: str | None = None
        try:
            self.model, self.tokenizer = model.load()
        except SampleKitError as exc:  # reported by the driver, not retried
            self.failure = str(exc)

    def __call__(self, batch: dict) -> dict:
        import warnings

        from samplekit.jobs.local import serve

        jobs: list[Job] = [pickle.loads(raw) for raw in batch["job"]]
        if self.failure is not None:
            return {"result": [pickle.dumps({"fatal": self.failure})]}
        self._maybe_crash()
        out = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                for job, records in serve(self.model, self.tokenizer, jobs, batch_size=self.batch_size):
                    out.append({"line": job.line, "records": records})
            except SampleKitError as exc:
                out.append({"fatal": str(exc)})
        said = list(dict.fromkeys(str(w.message) for w in caught))
        if said:
            out.insert(0, {"warnings": said})
        return {"result": [pickle.dumps(item) for item in out]}

    def _maybe_crash(self) -> None:
        if not self.crash_marker:
            return
        try:
            fd = os.open(self.crash_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os._exit(17)


def run_ray(jobs: list[Job], *, model: ModelSpec, batch_size: int, workers: int = 1, address: str | None = None,
            warn: Callable[[str], None] | None = None) -> Iterator[tuple[Job, list[dict]]]:
    """Serve ``jobs`` on Ray Data actors; yield each request's output lines as its batch ends."""
    ray = require_ray()
    if not jobs:
        return
    from samplekit.native_logs import quiet_native_logs

    with quiet_native_logs():  # Ray's C++ core prints glog lines (E core_worker.cc:...) on stderr
        reaper = _reaper(ray, address)
        try:
            started = _connect(ray, address, workers)
        except BaseException:
            _close(reaper)
            raise
        try:
            yield from _run(ray, jobs, model=model, batch_size=batch_size, workers=workers, warn=warn,
                            track=reaper.track if reaper is not None else None)
        finally:
            if started:
                ray.shutdown()
            _close(reaper)


def _reaper(ray, address: str | None):
    """For a local cluster this driver is about to start: a watcher that ends Ray's processes
    (its agents outlive a killed driver) when the driver dies, even by SIGKILL
    (``samplekit.jobs.reaper``); None for a cluster that was running already."""
    if ray.is_initialized() or address is not None or os.environ.get("RAY_ADDRESS"):
        return None
    from samplekit.jobs.reaper import Reaper, is_ray

    return Reaper.start(is_ray)


def _close(reaper) -> None:
    if reaper is not None:
        reaper.close()


def _connect(ray, address: str | None, workers: int) -> bool:
    """Join the cluster (``address``, else RAY_ADDRESS, else a new local one); whether we started it."""
    if ray.is_initialized():
        return False
    options: dict = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                         configure_logging=True)
    _check_reachable(address or os.environ.get("RAY_ADDRESS"))
    if address is None and not os.environ.get("RAY_ADDRESS"):
        # A local cluster: enough logical CPUs that the actors never starve the reading tasks.
        options["num_cpus"] = max(os.cpu_count() or 1, workers + 1)
    try:
        ray.init(address=address, **options)
    except Exception as exc:  # ConnectionError, RuntimeError, ValueError: an unreachable address
        where = address or os.environ.get("RAY_ADDRESS") or "a new local cluster"
        raise JobError(f"ray: cannot start or join {where}: {one_line(str(exc), 300)}") from None
    return True


def _check_reachable(address: str | None, timeout: float = 10.0) -> None:
    """A HOST:PORT (or ray://HOST:PORT) address answers a TCP connection; Ray itself would retry
    an unreachable one for minutes."""
    import socket

    if not address or address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise JobError(f"ray: cannot reach the cluster at {address} ({exc.strerror or exc}); check --address or "
                       "RAY_ADDRESS, and that the cluster is running") from None


def _run(ray, jobs: list[Job], *, model: ModelSpec, batch_size: int, workers: int,
         warn: Callable[[str], None] | None,
         track: Callable[[], None] | None = None) -> Iterator[tuple[Job, list[dict]]]:
    from ray.data import ActorPoolStrategy, DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    by_line = {job.line: job for job in jobs}
    rows = max(1, min(2 * batch_size, math.ceil(len(jobs) / workers)))  # requests per batch
    dataset = ray.data.from_items([{"job": pickle.dumps(job)} for job in jobs])
    resources = {"num_gpus": 1} if str(model.device).startswith("cuda") else {"num_cpus": 1}
    worker = type("SamplekitWorker", (Worker,), {"settings": {
        "model": model, "batch_size": batch_size, "crash_marker": os.environ.get(CRASH_ENV) or None}})
    options = dict(batch_size=rows, batch_format="numpy", compute=ActorPoolStrategy(size=workers), **resources)
    results = _map_batches(dataset, worker, options)
    if track is not None:
        track()  # the cluster's processes, agents included
    try:
        for row in results.iter_rows():
            if track is not None:
                track()  # and those started since (actors)
                track = None
            item = pickle.loads(row["result"])
            if "fatal" in item:
                raise JobError(item["fatal"])
            if "warnings" in item:
                for message in item["warnings"]:
                    if warn is not None:
                        warn(message)
                continue
            yield by_line[item["line"]], item["records"]
    except (SampleKitError, KeyboardInterrupt, GeneratorExit):
        raise
    except Exception as exc:  # the retries ran out, the cluster went away
        raise JobError(f"ray: the job failed ({one_line(_first_line(exc), 300)})") from None


def _map_batches(dataset, worker, options: dict):
    """``dataset.map_batches`` with at most RETRIES actor restarts and batch retries; where this
    Ray no longer takes them as remote arguments, its defaults (unbounded retries)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the remote-argument form is deprecated (Ray 2.60)
        try:
            return dataset.map_batches(worker, max_restarts=RETRIES, max_task_retries=RETRIES, **options)
        except TypeError:
            return dataset.map_batches(worker, **options)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"

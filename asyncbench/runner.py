"""Each experiment's part of a run (its `Plan`), for the one run flow in `session.py`, and the
`plot` command. A plan binds the validated settings to the target, runs the experiment, says
what each finished step is (rows, a line, a table) and concludes (sidecar fields, tables,
verdict); the session does the rest, the same way for every experiment.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asyncbench import metrics, report, session
from asyncbench.errors import OutputError
from asyncbench.redact import redact_header, redact_url
from asyncbench.session import Conclusion, Outputs, Steps, check_output_dir

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from asyncbench.experiments.descriptor import Experiment
    from asyncbench.experiments.load import LevelResult, RequestSpec
    from asyncbench.results import ResultsWriter
    from asyncbench.server import ServerConfig
    from asyncbench.shards import Driver


class _PlanDefaults:
    """What a plan does when it has nothing of its own to say: no warning before the run, no
    sidecar field besides its settings, no latency quantiles."""

    gone = None  # the target went away mid-run (set by the session before `conclude`)

    def check(self, console: Console) -> None:
        pass

    def metadata(self) -> dict[str, Any]:
        return {}

    def quantiles(self, result: Any) -> tuple[int, list[tuple[float, float]]] | None:
        return None

    def scale(self) -> AbstractContextManager[Any]:
        """The workers the run's load is made on, started for the run (none: this process)."""
        return nullcontext()


# --- trap and semaphore ------------------------------------------------------------------------


class LoadPlan(_PlanDefaults):
    """A load sweep (trap, semaphore): one row of LevelStats and its quantiles per level."""

    blocking = False
    live = True
    latency_file = True

    def __init__(self, experiment: Experiment, spec: RequestSpec, min_success: float, settings: dict[str, Any],
                 levels: list[int], run: Callable[[RequestSpec, Steps], Coroutine[Any, Any, Any]], loop: str,
                 driver: Driver | None = None) -> None:
        from asyncbench.shards import Driver

        self.driver = driver or Driver(loop)
        self.experiment = experiment
        self.spec = spec
        self.min_success = min_success
        self.settings = settings
        self.levels = levels
        self.total_steps = len(levels)
        self._run = run
        self.loop = loop

    def check(self, console: Console) -> None:
        from asyncbench.system import raise_nofile_limit

        nofile = raise_nofile_limit()
        if self.levels[-1] + 64 > nofile:
            console.print(
                f"[yellow]warning: {self.experiment.step} {self.levels[-1]:,} needs about {self.levels[-1] + 64:,} "
                f"open files but the limit is {nofile:,}: requests beyond it fail with 'Too many open files' "
                "(raise the hard limit: ulimit -Hn)[/]"
            )

    def bind(self, target_url: str, scratch: Path) -> RequestSpec:
        self.spec.url = target_url
        remote = self.driver.remote_hosts()
        if remote:
            print(f"asyncbench: warning: {len(remote)} worker host(s) are other machines ({', '.join(remote[:5])}): "
                  f"each loads {redact_url(target_url)} on its own loopback, so the target must run on each of them",
                  file=sys.stderr, flush=True)
        return self.spec

    def config(self) -> dict[str, Any]:
        spec = self.spec
        return {
            **self.settings,
            "method": spec.method,
            "headers": [redact_header(f"{k}: {v}") for k, v in spec.headers.items()],
            # What the body was, without what it said (it may hold a secret): to tell runs apart.
            "data_sha256": hashlib.sha256(spec.data).hexdigest()[:16] if spec.data is not None else None,
            "timeout_s": spec.timeout,
            "retries": spec.retries,
            "min_success": self.min_success,
            "engine": spec.engine,
            "loop": self.loop,
            "insecure": spec.insecure,
        }

    def metadata(self) -> dict[str, Any]:
        return {"engine": self.spec.engine, "scale": self.driver.describe()}

    def scale(self) -> AbstractContextManager[Any]:
        return self.driver

    def shard_facts(self, metadata: dict[str, Any], notes: list[str]) -> str | None:
        """The shards of a sharded run into the sidecar, their failures into the warnings;
        what to exit 1 with when a shard failed."""
        driver = self.driver
        if driver.sharded:
            metadata["shards"] = driver.log
        notes.extend(driver.failures)
        if not driver.failures:
            return None
        return f"{len(driver.failures)} shard(s) failed; their steps hold the other shards' requests only"

    @property
    def row_type(self) -> type:
        from asyncbench.metrics import LevelStats

        return LevelStats

    def run(self, steps: Steps, writer: ResultsWriter) -> Coroutine[Any, Any, Any]:
        return self._run(self.spec, steps)

    def rows(self, result: LevelResult) -> list[dict[str, Any]]:
        return [asdict(result.stats)]

    def quantiles(self, result: LevelResult) -> tuple[int, list[tuple[float, float]]]:
        return result.stats.level, result.quantiles

    def step_done(self, result: LevelResult, done: int) -> tuple[str | None, RenderableType | None]:
        step = self.experiment.step
        return f"{report.level_line(result.stats, step)} ({done} of {self.total_steps} {step}s)", None

    def excluded(self, results: Sequence[Any]) -> list[int]:
        """The steps no answer may be drawn from: the one during which the target went away,
        and those whose load was not all made (a shard died)."""
        out = [r.stats.level for r in results if r.incomplete]
        if self.gone is not None:
            out.append(self.gone.level)
        return out

    def gone_facts(self, metadata: dict[str, Any], shown: list[RenderableType]) -> None:
        """The target that went away, said under the verdict and in the sidecar."""
        from rich.text import Text

        gone = self.gone
        if gone is None:
            return
        line = (f"the target went away during {gone.step} ({gone.detail}): that {self.experiment.step} measured no "
                f"server, and no answer is drawn from it; the {self.experiment.step}s before it are kept")
        metadata["warnings"].insert(0, line)
        shown.append(Text(line, style="bold red"))

    def conclude(self, results: list[LevelResult], interrupted: bool, title: str) -> Conclusion:
        experiment, step = self.experiment, self.experiment.step
        rows = [r.stats for r in results]
        excluded = self.excluded(results)
        sweet = metrics.sweet_spot(rows, self.min_success, excluded)
        notes = [n for r in rows for n in metrics.warnings_for(r, self.min_success, step)]
        metadata = {
            "sweet_spot": None if sweet is None else {
                "level": sweet.level,
                "goodput_rps": sweet.goodput_rps,
                "success_rate": sweet.success_rate,
                "latency_p99_s": sweet.latency_p99_s,
                "ok_latency_p99_s": sweet.ok_latency_p99_s,
                "throttled": sweet.throttled,
                "reliable": not sweet.client_limited,
            },
            "client_limited_levels": [r.level for r in rows if r.client_limited],
            "warnings": notes,
            "rounds": {str(r.stats.level): r.rounds for r in results},
        }
        failed = self.shard_facts(metadata, notes)
        title = f"{title} — {'interrupted, ' if interrupted else ''}{len(rows)} {step}{'s' if len(rows) != 1 else ''}"
        answered = [r for r in rows if r.level not in excluded]
        shown: list[RenderableType] = [
            report.level_table(rows, sweet, title, step, experiment.queue_wait),
            report.verdict(answered, sweet, experiment.verdict_word, self.min_success, experiment.collapses),
        ]
        self.gone_facts(metadata, shown)
        shown += _usl(rows, metadata, self.min_success, excluded=excluded)
        block = report.warnings_block(notes)
        if block is not None:
            shown.append(block)
        return Conclusion(metadata, shown, min_success=self.min_success, failed=failed)


def _usl(rows: Sequence[Any], metadata: dict[str, Any], min_success: float, measured: bool = False,
         excluded: Sequence[int] = ()) -> list[RenderableType]:
    """The USL fitted to a sweep's goodput, over the levels that met the success floor (and
    whose client kept up): into the sidecar's `usl`, and a line to print. `measured`: N is the
    concurrency measured (L = λW), as for a rate sweep, whose levels are rates."""
    from rich.text import Text

    from asyncbench import usl

    if len(rows) < usl.MIN_LEVELS:
        metadata["usl"] = None
        return []
    kept = [r for r in rows if r.requests and r.success_rate >= min_success and not r.client_limited
            and r.level not in excluded]
    n_of = (lambda r: r.littles_l) if measured else (lambda r: r.level)
    fit = usl.fit([n_of(r) for r in kept], [r.goodput_rps for r in kept])
    if fit is None:
        why = (f"only {len(kept)} of {len(rows)} levels met {min_success * 100:g} % success with the client keeping "
               f"up (it needs at least {usl.MIN_LEVELS})")
        metadata["usl"] = usl.unfitted(why)
        return [Text(f"USL: not fitted: {why}", style="yellow")]
    if measured:
        fit.concurrency = "concurrency measured (L = λW)"
    usl.judge(fit, len(kept), max(r.goodput_rps for r in kept), max(n_of(r) for r in rows))
    metadata["usl"] = fit.to_dict()
    return [Text(fit.describe(), style="" if fit.reliable and fit.r2 >= usl.POOR_R2 else "yellow")]


def run_load(experiment: Experiment, url: str | None, spec: RequestSpec, server: ServerConfig, outputs: Outputs,
             min_success: float, settings: dict[str, Any], levels: list[int],
             run: Callable[[RequestSpec, Steps], Coroutine[Any, Any, Any]], loop: str = "asyncio",
             fail_if: Sequence[str] = (), driver: Driver | None = None) -> None:
    """`trap` and `semaphore`: target, pre-flight, sweep, files, table, charts."""
    session.run(LoadPlan(experiment, spec, min_success, settings, levels, run, loop, driver), url, server, outputs,
                fail_if)


# --- rate ---------------------------------------------------------------------------------------


class RatePlan(LoadPlan):
    """The open model: one row of RateStats and its quantiles per offered rate."""

    def __init__(self, spec: RequestSpec, min_success: float, slo_p99: float | None, settings: dict[str, Any],
                 rates: list[int], run: Callable[[RequestSpec, Steps], Coroutine[Any, Any, Any]], loop: str,
                 driver: Driver | None = None) -> None:
        from asyncbench.experiments import rate

        super().__init__(rate.EXPERIMENT, spec, min_success, settings, rates, run, loop, driver)
        self.slo_p99 = slo_p99

    def check(self, console: Console) -> None:
        pass  # connections are opened as needed, bounded by --max-in-flight (checked by the CLI)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "slo_p99_s": self.slo_p99}

    @property
    def row_type(self) -> type:
        from asyncbench.rates import RateStats

        return RateStats

    def step_done(self, result: Any, done: int) -> tuple[str | None, RenderableType | None]:
        return f"{report.rate_line(result.stats)} ({done} of {self.total_steps} rates)", None

    def conclude(self, results: list[Any], interrupted: bool, title: str) -> Conclusion:
        from asyncbench.rates import rate_row_facts, rate_sweet_spot, rate_warnings

        rows = [r.stats for r in results]
        excluded = self.excluded(results)
        sweet = rate_sweet_spot(rows, self.min_success, self.slo_p99, excluded)
        notes = [n for r in rows for n in rate_warnings(r)]
        metadata = {
            "sweet_spot": None if sweet is None else rate_row_facts(sweet),
            "client_limited_levels": [r.level for r in rows if r.client_limited],
            "warnings": notes,
        }
        failed = self.shard_facts(metadata, notes)
        title = f"{title} — {'interrupted, ' if interrupted else ''}{len(rows)} rate{'s' if len(rows) != 1 else ''}"
        answered = [r for r in rows if r.level not in excluded]
        shown: list[RenderableType] = [report.rate_table(rows, sweet, title),
                                       report.rate_verdict(answered, sweet, self.min_success, self.slo_p99)]
        self.gone_facts(metadata, shown)
        shown += _usl(rows, metadata, self.min_success, measured=True, excluded=excluded)
        block = report.warnings_block(notes)
        if block is not None:
            shown.append(block)
        return Conclusion(metadata, shown, min_success=self.min_success, failed=failed)


def run_rate(url: str | None, spec: RequestSpec, server: ServerConfig, outputs: Outputs, min_success: float,
             slo_p99: float | None, settings: dict[str, Any], rates: list[int],
             run: Callable[[RequestSpec, Steps], Coroutine[Any, Any, Any]], loop: str,
             fail_if: Sequence[str] = (), driver: Driver | None = None) -> None:
    """`rate`: target, pre-flight, one offered rate after another, files, table, charts."""
    session.run(RatePlan(spec, min_success, slo_p99, settings, rates, run, loop, driver), url, server, outputs,
                fail_if)


# --- find ---------------------------------------------------------------------------------------


class FindPlan(LoadPlan):
    """The search for the most load within an objective: a row per probe, in the order run."""

    def __init__(self, spec: RequestSpec, settings: dict[str, Any], config: Any, loop: str) -> None:
        from asyncbench.experiments import find

        self.lab = find
        self.find_config = config
        super().__init__(find.EXPERIMENT, spec, config.min_success, settings, [config.max_level],
                         lambda spec, steps: find.run(config, steps), loop, config.driver)
        self.total_steps = find.most_probes(config.max_level)

    def check(self, console: Console) -> None:
        cfg = self.find_config
        probes = self.total_steps
        typical = probes * (cfg.probe_duration + cfg.cooldown)
        # A probe sends nothing new after its duration; what is in flight then ends within the timeout.
        worst = probes * (cfg.probe_duration + cfg.cooldown + cfg.request.timeout)
        console.print(f"find: at most {probes} probes of about {cfg.probe_duration:g} s each, {cfg.cooldown:g} s "
                      f"apart (up to ~{typical:,.0f} s; at most ~{worst:,.0f} s if requests time out), "
                      f"levels 1 to {cfg.max_level:,}", soft_wrap=True)
        if cfg.mode == "concurrency":
            super().check(console)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "slo_p99_s": self.find_config.slo_p99}

    @property
    def row_type(self) -> type:
        return self.lab.RateProbe if self.find_config.mode == "rate" else self.lab.ConcurrencyProbe

    def step_done(self, result: Any, done: int) -> tuple[str | None, RenderableType | None]:
        r = result.stats
        unit = "/s" if self.find_config.mode == "rate" else ""
        verdict = "met" if r.passed else f"missed: {r.reason}"
        p99 = report.fmt_ms(r.ok_latency_p99_s) if r.successes else "-"
        return (f"probe {done}: level {r.level:,}{unit}: goodput {report.fmt_rate(r.goodput_rps)} req/s, "
                f"ok p99 {p99} ms, {report.fmt_pct(r.success_rate)} % ok — {verdict}"), None

    def conclude(self, results: list[Any], interrupted: bool, title: str) -> Conclusion:
        from rich.text import Text

        cfg = self.find_config
        best = self.lab.answer(results)
        knee = self.lab.recommended(results)
        rows = [r.stats for r in results]
        objective = f"p99 ≤ {cfg.slo_p99 * 1000:g} ms at ≥ {cfg.min_success * 100:g} % success"
        unit = "req/s" if cfg.mode == "rate" else "in flight"

        def facts(probe: Any) -> dict[str, Any] | None:
            return None if probe is None else {"level": probe.stats.level, "goodput_rps": probe.stats.goodput_rps,
                                               "latency_p99_s": probe.stats.ok_latency_p99_s}

        metadata = {"result": facts(best), "recommended": facts(knee), "objective": objective, "rounds": {},
                    "warnings": []}
        notes: list[str] = metadata["warnings"]
        failed = self.shard_facts(metadata, notes)
        title = f"{title} — {'interrupted, ' if interrupted else ''}{len(rows)} probes ({objective})"
        shown: list[RenderableType] = [report.find_table(rows, None if best is None else best.stats, title, unit,
                                                         None if knee is None else knee.stats)]
        missed = None
        if best is None:
            missed = f"no level met the objective ({objective})"
            shown.append(Text(f"not found: {missed}; the lowest probe, {rows[0].level:,} {unit}, missed it: "
                              f"{rows[0].reason}" if rows else f"not found: {missed}", style="bold red"))
        else:
            shown.append(report.find_verdict(rows, best.stats, knee.stats, objective, unit, cfg.max_level))
        self.gone_facts(metadata, shown)
        block = report.warnings_block(notes)
        if block is not None:
            shown.append(block)
        return Conclusion(metadata, shown, min_success=cfg.min_success,
                          objective_missed=None if interrupted or self.gone else missed, failed=failed)


def run_find(url: str | None, spec: RequestSpec, server: ServerConfig, outputs: Outputs, settings: dict[str, Any],
             config: Any, loop: str, fail_if: Sequence[str] = ()) -> None:
    """`find`: probe until the most load within the objective is bracketed to 10 %."""
    session.run(FindPlan(spec, settings, config, loop), url, server, outputs, fail_if)


# --- pipeline ----------------------------------------------------------------------------------


@dataclass
class PipelineRequest:
    """The validated settings of one `pipeline` command."""

    input_file: Path | None
    sizes: list[float]  # --generate-mb sizes (empty with --input)
    chunk_bytes: int
    batch_sizes: list[int]
    concurrency: list[int]
    output: Path | None
    headers: dict[str, str]
    timeout: float
    retries: int
    cooldown: float

    @property
    def runs(self) -> int:
        return (1 if self.input_file else len(self.sizes)) * len(self.batch_sizes) * len(self.concurrency)


class PipelinePlan(_PlanDefaults):
    """Stream the input(s) through every (batch size, concurrency) pair; a row per pair."""

    blocking = False
    live = True
    latency_file = False

    def __init__(self, req: PipelineRequest, results_dir: Path, embedded: bool, loop: str) -> None:
        from asyncbench.experiments import pipeline

        self.lab = pipeline
        self.experiment = pipeline.EXPERIMENT
        self.req = req
        self.results_dir = results_dir
        self.embedded = embedded
        self.loop = loop
        self.total_steps = req.runs
        self.inputs: list[tuple[Path, float]] = []
        self.endpoint = ""
        self.output_for: dict[tuple[float, int, int], Path] = {}

    def bind(self, target_url: str, scratch: Path) -> RequestSpec:
        from asyncbench.experiments.load import RequestSpec

        req = self.req
        self.endpoint = target_url.rstrip("/") + "/embed" if self.embedded else target_url
        if req.input_file is not None:
            self.inputs.append((req.input_file, req.input_file.stat().st_size / (1024 * 1024)))
        for size in req.sizes:
            path = scratch / f"generated-{size:g}mb.txt"
            self.lab.generate_text(path, size)
            self.inputs.append((path, size))
        return RequestSpec(url=self.endpoint, method="POST", headers={**req.headers, "Content-Type": "application/json"},
                           data=b'{"id": -1, "text": "asyncbench pre-flight"}', timeout=req.timeout)

    def config(self) -> dict[str, Any]:
        req = self.req
        return {
            "input": str(req.input_file) if req.input_file else None,
            "generate_mb": req.sizes or None,
            "chunk_bytes": req.chunk_bytes, "batch_sizes": req.batch_sizes, "concurrency": req.concurrency,
            "retries": req.retries, "timeout_s": req.timeout, "cooldown_s": req.cooldown, "loop": self.loop,
            "headers": [redact_header(f"{k}: {v}") for k, v in req.headers.items()],
        }

    @property
    def row_type(self) -> type:
        return self.lab.PairResult

    def run(self, steps: Steps, writer: ResultsWriter) -> Coroutine[Any, Any, Any]:
        req, lab = self.req, self.lab
        for _, size in self.inputs:
            for b in req.batch_sizes:
                for c in req.concurrency:
                    suffix = f"-{size:g}mb" if len(self.inputs) > 1 else ""
                    self.output_for[(size, b, c)] = req.output or self.results_dir / f"{writer.stem}{suffix}-b{b}-c{c}.jsonl"
        config = lab.PipelineConfig(
            request=lab.PipelineSpec(url=self.endpoint, headers=req.headers, timeout=req.timeout, retries=req.retries),
            inputs=self.inputs, chunk_bytes=req.chunk_bytes, batch_sizes=req.batch_sizes,
            concurrency=req.concurrency, output_for=self.output_for, cooldown=req.cooldown,
        )
        return lab.run(config, steps)

    def rows(self, result: Any) -> list[dict[str, Any]]:
        return [asdict(result)]

    def step_done(self, result: Any, done: int) -> tuple[str | None, RenderableType | None]:
        return (f"batch {result.batch_size}, concurrency {result.concurrency}, "
                f"{metrics.fmt_mb(result.input_mb)} MB done: {result.chunks:,} chunks, "
                f"{result.throughput_cps:,.1f} chunks/s, {result.success_rate * 100:.1f} % ok, "
                f"peak traced {result.peak_traced_mb:.2f} MB ({done} of {self.total_steps} runs)"), None

    def conclude(self, results: list[Any], interrupted: bool, title: str) -> Conclusion:
        req = self.req
        findings = metrics.pipeline_findings(results)
        metadata = {"findings": findings, "outputs": [str(p) for p in self.output_for.values()]}
        source = f"{req.input_file}" if req.input_file else "generated text"
        target = "embedded server /embed" if self.embedded else redact_url(self.endpoint)
        shown: list[RenderableType] = [report.pipeline_table(
            results, f"pipeline: {source} → {target}{' — interrupted' if interrupted else ''}")]
        shown += findings
        if results and not findings:
            best = max(results, key=lambda r: r.throughput_cps)
            shown.append(f"{best.chunks:,} chunks in {best.elapsed_s:.1f} s at {best.success_rate * 100:.1f} % success; "
                         f"peak traced memory {best.peak_traced_mb:.2f} MB above baseline")
        return Conclusion(metadata, shown, files=sorted({Path(r.output) for r in results}))


def run_pipeline(url: str | None, server: ServerConfig, outputs: Outputs, req: PipelineRequest,
                 loop: str = "asyncio", fail_if: Sequence[str] = ()) -> None:
    """Stream the input(s) through every (batch size, concurrency) pair; table, findings, charts."""
    session.run(PipelinePlan(req, outputs.results_dir, url is None, loop), url, server, outputs, fail_if)


# --- threads -----------------------------------------------------------------------------------


class ThreadsPlan(_PlanDefaults):
    """The four phases; a table per phase as it finishes, the summary, the verdict, the timeline."""

    loop = "asyncio"
    blocking = True  # time.sleep on the loop: the lesson; a signal must still interrupt it
    live = False
    latency_file = False
    total_steps = 4

    def __init__(self, tasks: int, sleep: float, timeout: float, impact: int = 0) -> None:
        from asyncbench.experiments import threads

        self.lab = threads
        self.experiment = threads.EXPERIMENT
        self.tasks, self.sleep, self.timeout, self.impact = tasks, sleep, timeout, impact
        self.target_url = ""
        self.summaries: list[metrics.PhaseSummary] = []
        self.coroutine_threads: set[str] = set()
        self.ways: list[Any] = []  # --impact: each way's record

    def bind(self, target_url: str, scratch: Path) -> RequestSpec:
        from asyncbench.experiments.load import RequestSpec

        self.target_url = target_url
        return RequestSpec(url=target_url, timeout=self.timeout)

    def config(self) -> dict[str, Any]:
        return {"tasks": self.tasks, "sleep_s": self.sleep, "timeout_s": self.timeout,
                "to_thread_workers": self.tasks, "default_executor_workers": self.lab.default_pool_size(),
                "impact": self.impact}

    @property
    def row_type(self) -> type:
        return self.lab.TaskRecord

    def run(self, steps: Steps, writer: ResultsWriter) -> Coroutine[Any, Any, Any]:
        def way_done(way: Any) -> None:
            # Into the sidecar at once, as a phase's rows are: nothing measured is lost.
            self.ways.append(way)
            writer.write_metadata(impact=[asdict(w) for w in self.ways])
            # A line per way, as a phase's table is printed when it ends (threads has no live display).
            print(f"asyncbench: {report.impact_line(way)}", file=sys.stderr, flush=True)

        return self.lab.run(self.lab.ThreadsConfig(url=self.target_url, tasks=self.tasks, sleep=self.sleep,
                                                   timeout=self.timeout, impact=self.impact, on_way=way_done), steps)

    def rows(self, phase: Any) -> list[dict[str, Any]]:
        return [asdict(record) for record in phase.records]

    def step_done(self, phase: Any, done: int) -> tuple[str | None, RenderableType | None]:
        self.coroutine_threads.update(r.coroutine_thread for r in phase.records)
        self.summaries.append(metrics.summarize_phase(
            phase.phase, [r.duration_s for r in phase.records], [r.thread_name for r in phase.records],
            phase.wall_s, phase.loop_lag_max_s))
        return None, report.phase_table(phase.phase, phase.records)

    def conclude(self, results: list[Any], interrupted: bool, title: str) -> Conclusion:
        from rich.text import Text

        summaries = self.summaries
        verdict = metrics.threads_verdict(summaries, self.coroutine_threads) if summaries else "no phase finished"
        shown: list[RenderableType] = [report.phase_summary_table(summaries), Text(verdict, style="bold")]
        pool = self.lab.default_pool_size()
        if any(s.phase == "to_thread" for s in summaries) and self.tasks > pool:
            shown.append(Text(
                f"note: to_thread ran on a pool of {self.tasks} workers; asyncio's default pool has "
                f"{pool} (min(32, CPUs + 4)) and would run {self.tasks} tasks in waves", style="yellow"))
        metadata: dict[str, Any] = {"summary": [asdict(s) for s in summaries], "verdict": verdict}
        if self.impact:
            from asyncbench.experiments import impact

            ways = self.ways
            metadata["impact"] = [asdict(w) for w in ways]
            metadata["impact_verdict"] = impact.verdict(ways) if ways else "no way finished"
            if ways:
                shown += [report.impact_table(ways, f"{self.impact:,} concurrent GETs, three ways"),
                          Text(metadata["impact_verdict"], style="bold")]
            refused = [w for w in ways if w.failures]
            starved = [w for w in refused if impact.OUT_OF_FILES in w.errors]
            if starved:
                import resource

                limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
                shown.append(Text(
                    "warning: this machine, not the target, failed some: " + "; ".join(
                        f"{w.way} {w.errors}" for w in starved)
                    + f" — {self.impact:,} requests at once need as many open files, and the limit (ulimit -n) "
                    f"is {limit:,}: raise it to compare the three ways", style="yellow"))
                refused = [w for w in refused if w not in starved]
            if refused:
                shown.append(Text(
                    "warning: the target refused or failed some: " + "; ".join(
                        f"{w.way} {w.failures:,} of {w.requests:,} ({w.errors})" for w in refused)
                    + f" — the comparison needs a server with room for {self.impact:,} requests at once "
                    "(the embedded server is started with it when no URL is given)", style="yellow"))
        return Conclusion(metadata, shown)


def run_threads(url: str | None, server: ServerConfig, outputs: Outputs, tasks: int, sleep: float,
                timeout: float, fail_if: Sequence[str] = (), impact: int = 0) -> None:
    """The four phases; a table per phase as it finishes, the summary, the verdict, the timeline;
    with `impact`, N concurrent GETs three ways (asyncio, a thread each, the default pool)."""
    session.run(ThreadsPlan(tasks, sleep, timeout, impact), url, server, outputs, fail_if)


# --- plot --------------------------------------------------------------------------------------


def plot_folder(results_dir: Path, out: Path, all_runs: bool) -> None:
    """Every chart for a folder: the newest run of each experiment, overlays, the comparison."""
    from asyncbench import signals

    with signals.deferred():  # a Ctrl-C waits for the chart being drawn (see session.finish)
        _plot_folder(results_dir, out, all_runs)


def _plot_folder(results_dir: Path, out: Path, all_runs: bool) -> None:
    from asyncbench.experiments import registry, run_charts
    from asyncbench.results import find_runs

    experiments = registry()
    runs, skipped = find_runs(results_dir, experiments)
    for note in skipped:
        print(f"asyncbench: warning: {note}", file=sys.stderr)
    if not runs:
        raise OutputError(f"no asyncbench results to plot in {str(results_dir)!r}")
    check_output_dir(out, "--out")
    from asyncbench.plots import comparison_chart, overlay_charts

    console = report.make_console()
    newest: dict[str, Any] = {}
    by_experiment: dict[str, list[Any]] = {}
    for run in runs:  # oldest first: the last one seen is the newest
        newest[run.experiment] = run
        by_experiment.setdefault(run.experiment, []).append(run)
    written: list[Path] = []
    for name, run in list(newest.items()):
        try:
            written += run_charts(run, out)
        except (KeyError, TypeError, ValueError) as exc:
            # A file asyncbench did not write as it is (hand-edited, foreign): said, and skipped.
            print(f"asyncbench: warning: skipped {run.csv_path}: its figures cannot be charted ({exc})",
                  file=sys.stderr)
            del newest[name]
            continue
        experiment = experiments[name]
        if all_runs and experiment.load_sweep and len(by_experiment[name]) > 1:
            written += overlay_charts(by_experiment[name], out, experiment.axis_label)
    # The lab's comparison: the same load all at once (Lab 2.2) and through a semaphore (Lab 2.3).
    pair = _lab_pair(newest, console)
    if pair is not None:
        trap_run, sem_run = pair
        name = f"{trap_run.experiment}-vs-{sem_run.experiment}-{sem_run.stem.removeprefix(sem_run.experiment + '-')}"
        written.append(comparison_chart(trap_run, sem_run, out, name))
        console.print(report.comparison_table(trap_run.frame, sem_run.frame))
    if not newest:
        raise OutputError(f"nothing in {str(results_dir)!r} could be charted")
    used = ", ".join(f"{r.stem}" for r in newest.values())
    overlaid = sum(len(runs) for name, runs in by_experiment.items() if experiments[name].load_sweep)
    console.print(f"charted {used}" + (f" and overlaid {overlaid} load runs" if all_runs else ""))
    console.print(f"wrote {len(written)} charts:")
    for path in written:
        console.print(f"  {path}", soft_wrap=True)


def _lab_pair(newest: dict[str, Any], console: Any, notes: list[str] | None = None) -> tuple[Any, Any] | None:
    """The newest trap and semaphore runs, when they loaded the same target the same way: the
    lab's comparison of the same load all at once and through a semaphore. When they did not,
    what differs is said (and added to `notes`) and there is no comparison."""
    from asyncbench.compare import differences
    from asyncbench.experiments import semaphore as semaphore_lab
    from asyncbench.experiments import trap as trap_lab

    trap_run = newest.get(trap_lab.EXPERIMENT.name)
    sem_run = newest.get(semaphore_lab.EXPERIMENT.name)
    if trap_run is None or sem_run is None:
        return None
    differ = differences(trap_run.meta, sem_run.meta)
    if differ:
        why = (f"{trap_run.stem} and {sem_run.stem} are not compared: they loaded different things "
               f"({'; '.join(differ)})")
        console.print(f"note: {why}", style="yellow", markup=False, soft_wrap=True)
        if notes is not None:
            notes.append(why)
        return None
    return trap_run, sem_run


# --- report --------------------------------------------------------------------------------------


def report_folder(results_dir: Path, out: Path, all_runs: bool) -> None:
    """One HTML page for a folder: the newest run of each experiment (every run with `all_runs`),
    and the trap against the semaphore when both are there."""
    from asyncbench import signals

    with signals.deferred():  # a Ctrl-C waits for the chart being drawn (see session.finish)
        _report_folder(results_dir, out, all_runs)


def _report_folder(results_dir: Path, out: Path, all_runs: bool) -> None:
    from asyncbench import webreport
    from asyncbench.experiments import registry
    from asyncbench.results import find_runs
    from asyncbench.session import check_output_file

    check_output_file(out, "--output")
    runs, skipped = find_runs(results_dir, registry())
    for note in skipped:
        print(f"asyncbench: warning: {note}", file=sys.stderr)
    if not runs:
        raise OutputError(f"no asyncbench results to report in {str(results_dir)!r}")
    newest = {run.experiment: run for run in runs}  # oldest first: the last one seen is the newest
    chosen = runs if all_runs else sorted(newest.values(), key=lambda r: (r.started, r.stem))
    console = report.make_console()
    pair = _lab_pair(newest, console, skipped)
    webreport.write(out, webreport.render(chosen, results_dir, pair, skipped))
    console.print(f"report: {out} ({len(chosen)} run{'s' if len(chosen) != 1 else ''}"
                  f"{', the trap against the semaphore' if pair else ''})", soft_wrap=True)


# --- compare -------------------------------------------------------------------------------------


def compare_runs(baseline: Path, candidate: Path, tolerance: float, out: Path | None, fail_on_regression: bool) -> None:
    """Two results files of a sweep, level by level; ObjectiveNotMet (exit 3) on a regression
    when asked to fail on one."""
    from asyncbench import compare
    from asyncbench.errors import ObjectiveNotMet, UsageError
    from asyncbench.experiments import read_run, registry

    runs = []
    for path, name in ((baseline, "BASELINE"), (candidate, "CANDIDATE")):
        if not path.is_file():
            raise UsageError(f"{name} {str(path)!r} is not a file")
        try:
            runs.append(read_run(path))
        except OutputError as exc:
            raise UsageError(f"{name}: {exc}") from None
    base, cand = runs
    experiments = registry()
    for run, name in ((base, "BASELINE"), (cand, "CANDIDATE")):
        if not experiments[run.experiment].load_sweep:
            raise UsageError(f"{name} {str(run.csv_path)!r} is a {run.experiment} run: compare takes sweeps "
                             "(trap, semaphore, rate)")
    console = report.make_console()
    if base.experiment != cand.experiment:
        console.print(f"[yellow]warning: comparing a {base.experiment} run with a {cand.experiment} run[/]")
    from asyncbench.compare import differences

    differ = differences(base.meta, cand.meta)
    if differ:
        console.print(f"warning: the runs loaded different things ({'; '.join(differ)}): a change may be the "
                      "setup's, not the target's", style="yellow", markup=False, soft_wrap=True)
    levels = compare.compare(base.frame.to_dict("records"), cand.frame.to_dict("records"),
                             base.meta.get("rounds") or {}, cand.meta.get("rounds") or {}, tolerance)
    if not levels:
        raise UsageError(f"the two runs share no level (baseline: {sorted(base.frame['level'])}, "
                         f"candidate: {sorted(cand.frame['level'])})")
    experiment = experiments[cand.experiment]
    console.print(report.compare_table(levels, f"{base.stem} → {cand.stem} (tolerance {tolerance * 100:g} %)",
                                       experiment.step))
    verdict = compare.overall(levels)
    worse = [lv.level for lv in levels if lv.verdict == "worse"]
    line = {"worse": f"worse: the candidate regressed at {experiment.step} {', '.join(f'{v:,}' for v in worse)}",
            "better": "better: the candidate improved and regressed nowhere",
            "no change": "no change: every difference is within the tolerance or the runs' own spread"}[verdict]
    console.print(line, style={"worse": "bold red", "better": "bold green"}.get(verdict, "bold"))
    if out is not None:
        check_output_dir(out, "--out")
        from asyncbench.plots import compare_chart

        path = compare_chart(base, cand, out, f"compare-{base.stem}-vs-{cand.stem}", experiment.axis_label)
        console.print(f"chart:   {path}", soft_wrap=True)
    if fail_on_regression and verdict == "worse":
        raise ObjectiveNotMet(f"regression at {experiment.step} {', '.join(f'{v:,}' for v in worse)}")

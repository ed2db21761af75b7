"""``bdekit batch``: decrypt or repair many images, on this machine or on a Dask cluster.

Thin over :mod:`bdekit.batch`: the options become a :class:`~bdekit.batch.BatchOptions`
(paths and flags: keys are read by each worker from the keyring's path, so the command takes
no secret on its command line), the jobs come from :func:`~bdekit.batch.load_jobs`, and
:func:`~bdekit.batch.run_batch` runs them on a :class:`~bdekit.batch.LocalPool` or, with
``--scheduler``, a :class:`~bdekit.batch.DaskCluster`; ``--html`` adds a page per job and
an index (:func:`bdekit.cli.report.write_batch_html`). Exit code: 0 all jobs succeeded, 6 some
finished with unrecoverable data, 1 any failed; 130 when interrupted.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from bdekit.batch import (
    MODES,
    BatchOptions,
    BatchSummary,
    DaskCluster,
    LocalPool,
    format_table,
    load_jobs,
    run_batch,
)
from bdekit.cli.report import check_batch_html, write_batch_html
from bdekit.errors import UsageError
from bdekit.pipeline.decrypt import DEFAULT_CHUNK
from bdekit.pipeline.paths import PathPlan
from bdekit.recovery.repair import command_line


def _abs(paths: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(os.path.abspath(p) for p in paths)


def _options(output_dir: str, kwargs: dict[str, Any]) -> BatchOptions:
    workers = kwargs["workers"] or os.cpu_count() or 1
    threads = kwargs["threads"]
    if threads is None and not kwargs["scheduler"]:
        threads = max(1, (os.cpu_count() or 1) // workers)
    cert_key = kwargs["certificate_key"]
    if cert_key and len(kwargs["certificate"]) != 1:
        raise UsageError("--certificate-key needs exactly one --certificate")
    return BatchOptions(
        output_dir=os.path.abspath(output_dir), mode=kwargs["mode"],
        keyrings=_abs(kwargs["keyring"]), key_packages=_abs(kwargs["key_package"]),
        certificates=_abs(kwargs["certificate"]),
        certificate_key=os.path.abspath(cert_key) if cert_key else None,
        audit_log=os.path.abspath(kwargs["audit_log"]) if kwargs["audit_log"] else None,
        force=kwargs["force"], resume=kwargs["resume"], threads=threads,
        chunk_size=kwargs["chunk_size"], hash_output=not kwargs["no_hash"],
        retries=kwargs["retries"],
        command=command_line(["bdekit", *sys.argv[1:]]) if sys.argv else "bdekit batch")


@click.command("batch")
@click.argument("jobs", type=click.Path(exists=True))
@click.option("--output-dir", "-o", "output_dir", required=True, metavar="DIR",
              type=click.Path(file_okay=False),
              help="where each job's output, mapfile and report go (DIR/<job>/), with "
                   "summary.json and summary.csv")
@click.option("--keyring", multiple=True, metavar="FILE|DIR", type=click.Path(exists=True),
              help="escrowed keys (recovery key text files, Entra ID / Intune / MBAM CSV, "
                   "Graph or AD DS JSON, LDIF, BEK files, or a directory of them), read by "
                   "each worker; only keys whose ID matches a protector are tried "
                   "(repeatable)")
@click.option("-kp", "--key-package", "key_package", multiple=True, metavar="FILE|DIR",
              type=click.Path(exists=True),
              help="key packages for --mode repair (repeatable)")
@click.option("--certificate", multiple=True, metavar="FILE", type=click.Path(dir_okay=False),
              help="DRA certificate with its private key (PKCS#12 or PEM); its password is "
                   "read by each worker from $BDEKIT_CERTIFICATE_PASSWORD (repeatable)")
@click.option("--certificate-key", default=None, metavar="FILE",
              type=click.Path(dir_okay=False),
              help="private key of a PEM --certificate kept in a separate file")
@click.option("--audit-log", default=None, metavar="FILE", type=click.Path(dir_okay=False),
              help="append the audit trail of key use here (default: $BDEKIT_AUDIT_LOG or "
                   "the user's state directory, on each worker)")
@click.option("--mode", type=click.Choice(MODES), default="decrypt", show_default=True,
              help="decrypt: volumes with intact metadata; repair: salvage damaged ones "
                   "(like `bdekit repair`)")
@click.option("--workers", type=click.IntRange(1, 1024), default=None,
              help="worker processes on this machine (default: one per core)")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="run the jobs on this Dask scheduler (tcp://HOST:8786) instead; needs "
                   "bdekit[cluster] and workers that see the same paths")
@click.option("--threads", type=click.IntRange(1, 256), default=None,
              help="decrypt threads per job (default: cores / workers; on Dask, the "
                   "worker's cores)")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None,
              help="also write the summary JSON here")
@click.option("--resume", is_flag=True,
              help="skip the jobs an earlier run finished, continue interrupted ones from "
                   "their journal")
@click.option("--force", "-f", is_flag=True, help="redo the jobs of an earlier run")
@click.option("--retries", type=click.IntRange(0, 100), default=1, show_default=True,
              help="re-reads of a failing range before it is split, and of a failing sector")
@click.option("--no-hash", is_flag=True, help="skip the SHA-256 of the outputs")
@click.option("--html", "html", is_flag=True,
              help="also write an HTML page per job (DIR/<job>/report.html: volume map, "
                   "metadata, protectors) and DIR/index.html linking them")
@click.option("--chunk-size", type=click.IntRange(4096, 256 << 20), default=DEFAULT_CHUNK,
              hidden=True)
@click.pass_context
def batch(ctx: click.Context, jobs: str, output_dir: str, **kwargs: Any) -> None:
    """Decrypt every BitLocker volume of JOBS, each into DIR/<job>/.

    JOBS is a directory of evidence (every image in it, raw, split, E01, VHD/VHDX, and every
    BitLocker partition of a disk) or a CSV / JSON job list (input, partition or offset,
    output name, key_file or key_entry, mapfile; never a secret). A job that fails is
    recorded and the others go on. Exit 0: all succeeded; 6: some finished with data that
    could not be recovered; 1: any failed.

    A Dask cluster: `dask scheduler --port 8786` on one machine, `dask worker
    tcp://HOST:8786 --nthreads 1` on each machine that sees the same paths, then
    `bdekit batch ... --scheduler tcp://HOST:8786`.
    """
    quiet = bool(ctx.obj and ctx.obj.get("quiet"))
    _check_paths(jobs, kwargs)
    opts = _options(output_dir, kwargs)
    job_list = load_jobs(jobs, mode=opts.mode, output_dir=opts.output_dir)
    if kwargs["html"]:
        check_batch_html([job.name for job in job_list])
    backend = DaskCluster(kwargs["scheduler"]) if kwargs["scheduler"] \
        else LocalPool(min(kwargs["workers"] or os.cpu_count() or 1, len(job_list)))
    if not quiet:
        click.echo(f"bdekit: {len(job_list)} job(s) on {backend.description}", err=True)
    try:
        summary = run_batch(job_list, opts, backend, report_path=kwargs["report_path"],
                      progress=not quiet and sys.stderr.isatty(),
                      announce=None if quiet else lambda line: click.echo(line, err=True))
    except KeyboardInterrupt:
        click.echo(f"bdekit: interrupted; the summary so far is in {opts.output_dir}; run "
                   "again with --resume to continue", err=True)
        ctx.exit(130)
    if kwargs["html"]:
        write_batch_html(opts.output_dir, summary.to_json())
    _show(summary, quiet)
    ctx.exit(summary.exit_code)


def _check_paths(jobs: str, kwargs: dict[str, Any]) -> None:
    """``--report`` (and the audit log) must not be the job list or a key file (exit 2)."""
    plan = PathPlan()
    if os.path.isfile(jobs):
        plan.add_input("job list", jobs)
    for role, key in (("keyring", "keyring"), ("key package", "key_package"),
                      ("certificate", "certificate")):
        plan.add_inputs(role, kwargs[key])
    plan.add_input("certificate key", kwargs["certificate_key"])
    plan.add_output("report", kwargs["report_path"], stream_ok=True, may_exist=True)
    if kwargs["audit_log"]:
        plan.add_audit_log(kwargs["audit_log"])
    plan.check()


def _show(summary: BatchSummary, quiet: bool) -> None:
    """The final table on stderr; with ``--quiet``, only the failed jobs' reasons."""
    if not quiet:
        click.echo(format_table(summary), err=True)
        return
    for result in summary.results:
        if result.error:
            click.echo(f"bdekit: error: {result.job}: {result.error}", err=True)


COMMANDS = [batch]

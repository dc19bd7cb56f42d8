//! Which launcher a command uses: threads of this process, or — when `mpirun` started it —
//! this process's block of ranks of an MPI job.

use std::time::Duration;

use anyhow::anyhow;
use finetp_engine::Launcher;

use crate::Failure;

/// The launcher for a world of `world` ranks: threads unless an MPI launcher started this
/// process as one of several, and then `ranks_per_process` ranks per process (default: the
/// world divided evenly over the processes).
///
/// # Errors
/// Bad input: `--ranks-per-process` without mpirun or not fitting the world, or mpirun with a
/// binary built without MPI (the message names the command that builds one).
pub fn launcher(world: usize, ranks_per_process: Option<usize>, timeout: Duration) -> Result<Launcher, Failure> {
    let processes = finetp_engine::mpi_launched_processes().unwrap_or(1);
    if processes <= 1 {
        if let Some(k) = ranks_per_process.filter(|&k| k != world) {
            return Err(Failure::Input(anyhow!(
                "--ranks-per-process {k}: this process was not started by mpirun, so it runs all {world} ranks; start {} processes with `mpirun -np {}`",
                world / k.max(1),
                world / k.max(1)
            )));
        }
        return Ok(Launcher::threads(timeout));
    }
    let k = match ranks_per_process {
        Some(0) => return Err(Failure::Input(anyhow!("--ranks-per-process must be at least 1"))),
        Some(k) => k,
        None if world.is_multiple_of(processes) => world / processes,
        None => {
            return Err(Failure::Input(anyhow!(
                "mpirun started {processes} processes but the layout has {world} ranks, which they cannot share evenly; use `mpirun -np N` with N dividing {world}"
            )));
        }
    };
    if processes.checked_mul(k) != Some(world) {
        return Err(Failure::Input(anyhow!(
            "the layout has {world} ranks but mpirun started {processes} processes x --ranks-per-process {k} = {}",
            processes.saturating_mul(k)
        )));
    }
    mpi_launcher(k, timeout)
}

#[cfg(feature = "mpi")]
fn mpi_launcher(ranks_per_process: usize, timeout: Duration) -> Result<Launcher, Failure> {
    let world = finetp_engine::mpi::MpiWorld::init(ranks_per_process).map_err(|e| Failure::Runtime(e.into()))?;
    Ok(Launcher::mpi(world, timeout))
}

#[cfg(not(feature = "mpi"))]
fn mpi_launcher(_ranks_per_process: usize, _timeout: Duration) -> Result<Launcher, Failure> {
    Err(Failure::Input(anyhow!(
        "this finetp was started by mpirun as one of several processes, but it was built without MPI support; build one that has it with `cargo build --release -p finetp-cli --features mpi`"
    )))
}

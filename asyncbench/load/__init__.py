"""The load layer, under the experiments: what one round of load is and where it is made.

    spec.py      RequestSpec (what every request of a run looks like), the pre-flight request,
                 the check that the target is still there
    closed.py    the closed loop's round: N requests kept in flight by C workers (trap, semaphore)
    open.py      the open loop's offer: requests launched on a schedule (rate)
    driver.py    the Driver that makes a round's load — in this process, or split into shards
    processes.py, cluster.py, work.py
                 shards on local worker processes or Dask workers, and what a shard runs

Nothing here imports an experiment: experiments call `Driver.closed`/`Driver.open` and never
know how many shards ran.
"""

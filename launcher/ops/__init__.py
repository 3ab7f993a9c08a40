"""The steps of a job's life that talk to hosts: the job service, registry, stage, launch, follow, collect, probe."""

"""Entry scripts staged to the hosts with every job (they need only mindspore + mindformers).

``run_cpu.py`` is the CPU twin of MindFormers' ``run_mindformer.py``; ``cpu_patches.py``
fills three MindSpore CPU gaps it needs. Neither imports anything from ``launcher``: they
are copied on their own into the job's ``code/`` directory.
"""

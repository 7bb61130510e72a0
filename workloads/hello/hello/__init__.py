"""hello: a tiny, real, stdlib-only training program that follows the launch workload contract.

Run it from `workloads/hello` with `python3 -m hello.train`; see `hello/train.py`.
"""

__version__ = "1.0.0"

"""The developer scripts, and the one set of process and edge primitives that ``make dev``
(``dev``), the bench (``bench/stack.py``) and the tests (``tests/support``, ``tests/browser``,
``tests/infra``, ``tests/chaos``) share: ``processes`` (start with an environment and a log,
wait until it answers, stop gracefully then kill; Redis and nginx) and ``render_nginx`` (the
edge config and certificate, made by the same shell scripts the edge image runs).

A regular package at the repository root, like ``bench`` and ``tests``: imported as
``scripts.*`` and run as ``python -m scripts.dev`` from the root, so nothing edits
``sys.path``. Not a workspace package on purpose: no image or lock needs it. Standard library
only, except ``dev``, which reads the services' own settings classes.
"""

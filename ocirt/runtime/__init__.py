"""The library API: one module per operation (create, start, kill, delete, run, query).

A Python user can call these directly, e.g.::

    from ocirt.state import Store
    from ocirt.runtime.create import CreateOptions, create
    create(Store("/run/ocirt"), "c1", CreateOptions(bundle="/path/to/bundle"))
"""

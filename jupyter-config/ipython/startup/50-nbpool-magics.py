# Installed by nbpool into {sys.prefix}/etc/ipython/startup/: IPython runs it in every kernel
# (and terminal IPython) of this environment, so %%pmap and %pmap work without %load_ext.
# Set the environment variable NBPOOL_AUTOLOAD=0 to turn this off. Registering the magics
# imports only nbpool/__init__.py and nbpool/magics.py: no workers start here.


def _nbpool_autoload():
    import os
    import sys

    if os.environ.get("NBPOOL_AUTOLOAD", "1").strip().lower() in ("0", "false", "no", "off"):
        return
    try:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None:
            shell.extension_manager.load_extension("nbpool")
    except Exception as exc:  # a broken install must never stop a kernel from starting
        print(f"nbpool: the %%pmap magics could not be loaded: {exc}", file=sys.stderr)


_nbpool_autoload()
del _nbpool_autoload

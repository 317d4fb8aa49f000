"""pytest plugin (`-p trnlab.compat.pytest_plugin`): installs the nki / neuronxcc shim before collection,
in the main process and in every xdist worker."""
from trnlab.compat import install

install()


def pytest_report_header(config):
    from trnlab.compat import installed
    return f"trnlab compat shim: {', '.join(installed()) or 'inactive (real packages installed)'}"

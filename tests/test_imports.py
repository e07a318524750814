"""What each entry point imports: the vocabulary, configs and the dataset registry load without torch."""
import subprocess
import sys

import pytest

TORCH_FREE = ["asym", "asym.labels", "asym.archs", "asym.protocol", "asym.data", "asym.data.sources",
              "asym.data.cli", "asym.data.scan", "asym.data.manifest", "asym.data.images"]


@pytest.mark.parametrize("module", TORCH_FREE)
def test_module_imports_without_torch(module):
    """Checked in a fresh interpreter: sys.modules after the import must not hold torch."""
    code = f"import sys, {module}; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0, f"importing {module} imported torch"


def test_the_lazy_public_names_still_resolve():
    import asym
    assert asym.parse_model("uSF+BN+BM").label == "uSF+BN+BM"
    assert asym.convert.__module__ == "asym.nn" and asym.AsymConv2d.__name__ == "AsymConv2d"
    assert asym.optim.BatchManhattan.__module__ == "asym.optim"
    assert set(asym.__all__) <= set(dir(asym))
    with pytest.raises(AttributeError):
        asym.no_such_name

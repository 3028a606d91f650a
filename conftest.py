"""Repository-wide pytest plugins: the root conftest is the only place pytest accepts
`pytest_plugins`, and fixtures registered here reach both tests/ and e2e/."""

pytest_plugins = ("kube_fixtures",)

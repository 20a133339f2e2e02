GREETING = "hi"
import a_package_that_is_not_installed  # noqa: E402  the mistake: ModuleNotFoundError at import time

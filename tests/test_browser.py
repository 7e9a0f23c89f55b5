"""Browser test: the app started on a loopback port, every page in the navigation opened in headless Chromium."""
import time
from pathlib import Path

from tests.conftest import assert_no_errors, wait_for_app

ROOT = Path(__file__).resolve().parent.parent


def navigation_pages() -> list[str]:
    import ast

    tree = ast.parse((ROOT / "app.py").read_text())
    pages = next(n.value for n in ast.walk(tree) if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "PAGES")
    files = [ast.literal_eval(elt)[0] for elt in pages.elts]
    return [f for f in files if (ROOT / f).is_file()]


def test_home_renders_in_browser(app_url, page):
    start = time.perf_counter()
    page.goto(app_url)
    wait_for_app(page)
    page.get_by_text("Reproductive-medicine image AI").first.wait_for()
    print(f"\ntime to first render of the home page: {time.perf_counter() - start:.1f} s")
    assert_no_errors(page)
    assert page.get_by_text("Research demonstration only").count() >= 1
    page.screenshot(path=str(ROOT / ".pytest_cache" / "home.png"), full_page=True)


def test_every_page_in_the_navigation_opens_without_error(app_url, page):
    files = navigation_pages()
    for file in files:
        stem = Path(file).stem
        page.goto(app_url if stem == "home" else f"{app_url}/{stem}")
        wait_for_app(page, timeout_ms=120_000)
        assert_no_errors(page)
        errors = page.locator('[data-testid="stAlertContentError"]')
        assert errors.count() == 0, f"{file}: {errors.first.inner_text()}"
        if len(files) > 1:  # Streamlit hides the navigation when there is a single page
            assert page.locator('[data-testid="stSidebarNav"]').count() == 1

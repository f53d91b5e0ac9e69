"""What the tests read in HTML pages."""

from __future__ import annotations

from html.parser import HTMLParser


class _AssetLinks(HTMLParser):
    """The URLs of an HTML page's scripts, stylesheets, icons and images (``urls``, in order)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        url = values.get("src") if tag in ("script", "img") else (
            values.get("href") if tag == "link" else None)
        if url:
            self.urls.append(url)


def asset_urls(html: str) -> list[str]:
    """The URLs of ``html``'s scripts, stylesheets, icons and images."""
    parser = _AssetLinks()
    parser.feed(html)
    return parser.urls

"""Plain text out of the documents people upload or link: PDF, DOCX, HTML, Markdown, plain text.

The format comes from the bytes first (a PDF starts with `%PDF-`, a DOCX is a zip holding
`word/document.xml`), then the declared content type, then the file name's extension. Anything else is
refused rather than guessed at.

Errors::

    ExtractionError            the document gave no usable text (message says why, for the source's `error`)
    ├── UnsupportedDocument    not one of the supported formats
    └── EmptyDocument          a supported format with no text in it (a scanned PDF, an empty page)
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Literal

DocumentFormat = Literal["pdf", "docx", "html", "markdown", "text"]

SUPPORTED = "PDF, DOCX, HTML, Markdown or plain text"

_EXTENSIONS: dict[str, DocumentFormat] = {
    "pdf": "pdf", "docx": "docx", "html": "html", "htm": "html", "xhtml": "html",
    "md": "markdown", "markdown": "markdown", "txt": "text", "text": "text",
}
_CONTENT_TYPES: dict[str, DocumentFormat] = {
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "text/html": "html", "application/xhtml+xml": "html",
    "text/markdown": "markdown", "text/x-markdown": "markdown",
    "text/plain": "text",
}


class ExtractionError(Exception):
    pass


class UnsupportedDocument(ExtractionError):
    pass


class EmptyDocument(ExtractionError):
    pass


@dataclass(frozen=True)
class Document:
    format: DocumentFormat
    text: str
    title: str | None = None


def detect_format(data: bytes, content_type: str | None, filename: str | None) -> DocumentFormat:
    if data.startswith(b"%PDF-"):
        return "pdf"
    if data.startswith(b"PK\x03\x04"):
        if _is_docx(data):
            return "docx"
        raise UnsupportedDocument(f"unsupported file type (a zip archive); upload {SUPPORTED}")
    declared = (content_type or "").split(";", 1)[0].strip().lower()
    extension = (filename or "").rsplit(".", 1)[-1].lower() if filename and "." in filename else ""
    fmt = _CONTENT_TYPES.get(declared) or _EXTENSIONS.get(extension)
    if fmt in ("pdf", "docx"):  # the name says PDF/DOCX but the bytes do not
        raise UnsupportedDocument(f"the file is not a valid {fmt.upper()} document")
    if fmt is None and declared in ("", "application/octet-stream") and _looks_textual(data):
        fmt = "html" if _looks_like_html(data) else "text"
    if fmt is None:
        what = declared or extension or "unknown"
        raise UnsupportedDocument(f"unsupported file type ({what}); upload {SUPPORTED}")
    if not _looks_textual(data):
        raise UnsupportedDocument(f"the file is not text; upload {SUPPORTED}")
    return fmt


def extract(data: bytes, content_type: str | None = None, filename: str | None = None) -> Document:
    fmt = detect_format(data, content_type, filename)
    if fmt == "pdf":
        document = Document(fmt, _pdf_text(data))
    elif fmt == "docx":
        document = Document(fmt, _docx_text(data))
    else:
        text = _decode(data, content_type)
        if fmt == "html":
            title, body = html_text(text)
            document = Document(fmt, body, title)
        elif fmt == "markdown":
            document = Document(fmt, markdown_text(text))
        else:
            document = Document(fmt, text)
    if not document.text.strip():
        raise EmptyDocument("the document contains no text")
    return document


def _is_docx(data: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return "word/document.xml" in archive.namelist()
    except zipfile.BadZipFile:
        return False


def _looks_textual(data: bytes) -> bool:
    sample = data[:4096]
    return b"\x00" not in sample


def _looks_like_html(data: bytes) -> bool:
    head = data[:1024].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html")) or b"<body" in head


def _decode(data: bytes, content_type: str | None) -> str:
    charset = None
    match = re.search(r"charset=([\w-]+)", content_type or "", re.IGNORECASE)
    if match:
        charset = match.group(1)
    for encoding in (charset, "utf-8-sig", "cp1252"):
        if encoding is None:
            continue
        try:
            return data.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            continue
    return data.decode("utf-8", errors="replace")


def _pdf_text(data: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, TypeError) as error:
        raise UnsupportedDocument(f"the PDF cannot be read: {error}") from None
    return "\n\n".join(p.strip() for p in pages if p.strip())


def _docx_text(data: bytes) -> str:
    import docx

    try:
        document = docx.Document(io.BytesIO(data))
    except (KeyError, ValueError, zipfile.BadZipFile) as error:
        raise UnsupportedDocument(f"the DOCX cannot be read: {error}") from None
    blocks = [p.text for p in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            blocks.append(" | ".join(cell.text.strip() for cell in row.cells))
    return "\n\n".join(b.strip() for b in blocks if b.strip())


_SKIPPED_TAGS = frozenset({"script", "style", "noscript", "template", "svg", "head", "nav", "footer"})
_BLOCK_TAGS = frozenset({
    "p", "div", "section", "article", "main", "br", "li", "ul", "ol", "table", "tr", "h1", "h2", "h3", "h4",
    "h5", "h6", "blockquote", "pre", "dt", "dd", "header", "aside", "form", "hr",
})
_VOID_TAGS = frozenset({"br", "hr", "img", "input", "meta", "link", "area", "base", "col", "source", "wbr"})


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title_parts: list[str] = []
        self._skip_depth = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in _SKIPPED_TAGS and tag not in _VOID_TAGS:
            self._skip_depth += 1
        if tag in _BLOCK_TAGS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in _SKIPPED_TAGS and self._skip_depth:
            self._skip_depth -= 1
        if tag in _BLOCK_TAGS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title_parts.append(data)
        elif not self._skip_depth:
            self.parts.append(data)


def html_text(html: str) -> tuple[str | None, str]:
    """(title, visible text) of an HTML page; scripts, styles, navigation and footers are dropped."""
    parser = _TextParser()
    parser.feed(html)
    parser.close()
    title = " ".join("".join(parser.title_parts).split()) or None
    text = "".join(parser.parts)
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r"\s*\n\s*\n\s*", "\n\n", text)
    return title, text.strip()


_MD_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^```.*?$", re.MULTILINE), ""),  # fence lines (the code inside is kept)
    (re.compile(r"!\[([^\]]*)\]\([^)]*\)"), r"\1"),  # images -> alt text
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),  # links -> their text
    (re.compile(r"^[ \t]{0,3}#{1,6}[ \t]*(.*?)[ \t]*#*[ \t]*$", re.MULTILINE), r"\1."),  # headings end a sentence
    (re.compile(r"^[ \t]{0,3}>[ \t]?", re.MULTILINE), ""),  # block quotes
    (re.compile(r"^[ \t]*(?:[-*+]|\d+[.)])[ \t]+", re.MULTILINE), ""),  # list markers
    (re.compile(r"^[ \t]*(?:[-*_][ \t]*){3,}$", re.MULTILINE), ""),  # horizontal rules
    (re.compile(r"(\*\*|__|\*|_|~~|`)(?=\S)(.+?)(?<=\S)\1"), r"\2"),  # emphasis, inline code
    (re.compile(r"<[^>\n]+>"), ""),  # inline HTML tags
)


def markdown_text(markdown: str) -> str:
    text = markdown
    for pattern, replacement in _MD_RULES:
        text = pattern.sub(replacement, text)
    text = re.sub(r"\.\.$", ".", text, flags=re.MULTILINE)
    return text.strip()

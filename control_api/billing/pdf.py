"""A minimal PDF writer (PDF 1.4, ISO 32000-1 §7) for statements: text lines on US-Letter pages.

Only the standard Type 1 fonts are used (Helvetica, Helvetica-Bold, Courier: every reader has them, so
nothing is embedded), text is WinAnsi-encoded (characters outside it print as '?'), and each page is one
content stream of `BT … Tj ET` operations. The cross-reference table is built from the real byte
offsets, so readers need no repair.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PAGE_WIDTH, PAGE_HEIGHT = 612, 792  # US Letter, in points
MARGIN = 54
FONTS = {"F1": "Helvetica", "F2": "Helvetica-Bold", "F3": "Courier"}


def _escape(text: str) -> bytes:
    raw = text.encode("cp1252", errors="replace")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


@dataclass
class Document:
    """Lines flow down the page; a new page starts when the next line would cross the bottom margin."""

    title: str = "Document"
    pages: list[list[bytes]] = field(default_factory=lambda: [[]])
    y: float = PAGE_HEIGHT - MARGIN

    def line(self, text: str, *, font: str = "F1", size: float = 10, x: float = MARGIN, gap: float = 1.5) -> None:
        step = size * gap
        if self.y - step < MARGIN:
            self.pages.append([])
            self.y = PAGE_HEIGHT - MARGIN
        self.y -= step
        self.pages[-1].append(
            b"BT /%s %.1f Tf %.1f %.1f Td (%s) Tj ET" % (font.encode(), size, x, self.y, _escape(text))
        )

    def space(self, points: float) -> None:
        self.y -= points

    def render(self) -> bytes:
        objects: list[bytes] = []  # object n is objects[n - 1]

        def add(body: bytes) -> int:
            objects.append(body)
            return len(objects)

        catalog = add(b"")  # filled in once the page tree exists
        pages = add(b"")
        fonts = {name: add(b"<< /Type /Font /Subtype /Type1 /BaseFont /%s /Encoding /WinAnsiEncoding >>"
                           % base.encode()) for name, base in FONTS.items()}
        font_refs = b" ".join(b"/%s %d 0 R" % (name.encode(), ref) for name, ref in fonts.items())
        kids = []
        for operations in self.pages:
            stream = b"\n".join(operations)
            content = add(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
            kids.append(add(
                b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 %d %d] /Resources << /Font << %s >> >> "
                b"/Contents %d 0 R >>" % (pages, PAGE_WIDTH, PAGE_HEIGHT, font_refs, content)
            ))
        objects[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % pages
        objects[pages - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
            b" ".join(b"%d 0 R" % k for k in kids), len(kids))
        info = add(b"<< /Title (%s) /Producer (Flowyte) >>" % _escape(self.title))

        out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
        offsets = []
        for number, body in enumerate(objects, start=1):
            offsets.append(len(out))
            out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
        xref = len(out)
        out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
        out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
        out += b"trailer\n<< /Size %d /Root %d 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
            len(objects) + 1, catalog, info, xref)
        return bytes(out)

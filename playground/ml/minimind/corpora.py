"""Offline text corpora from Debian packages, read into small records (no download, ever).

Installed by ``scripts/setup.sh``; each reader names the Debian package when its files are
missing (:class:`CorpusMissing`).

==================  ===========================================  =========================================
source              files                                         license
==================  ===========================================  =========================================
``fortunes-zh``     /usr/share/games/fortunes/tang300, song100   package GPL-3+; the classical poems
                    (Tang poems, Song poems; the ``chinese``     themselves are public domain
                    file of Debian hints is not read)
``fortunes``,       /usr/share/games/fortunes/* (English         BSD (fortune); provenance of single
``fortunes-min``    quotes, ``%``-separated, one topic a file)   quotes is mixed
``jargon-text``     /usr/share/doc/jargon-text/jargon.txt.gz     public domain
                    (the Jargon File 4.4.7 lexicon)
``dict-devil``      /usr/share/dictd/devil.index, devil.dict.dz  public domain (Ambrose Bierce,
                    (The Devil's Dictionary, a dictd database)   1881-1906)
==================  ===========================================  =========================================

Records are frozen dataclasses with a ``key`` (stable, from the content: the same entry
gets the same key wherever it appears, so a held-out split by key never leaks a duplicate)
and a ``text`` (the record as plain text, for pretraining).
"""

from __future__ import annotations

import gzip
import re
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ...errors import UserError

FORTUNES_DIR = Path("/usr/share/games/fortunes")
JARGON_PATH = Path("/usr/share/doc/jargon-text/jargon.txt.gz")
DEVIL_INDEX = Path("/usr/share/dictd/devil.index")
DEVIL_DATA = Path("/usr/share/dictd/devil.dict.dz")

#: fortunes-zh files and what they hold.
POEM_FILES = {"tang300": "tang", "song100": "song"}
#: fortune files that are not English prose quotes (Chinese, pictures).
NOT_QUOTES = frozenset({"tang300", "song100", "chinese", "ascii-art"})
#: readable names for the English fortune files.
TOPIC_NAMES = {
    "art": "art", "computers": "computers", "cookie": "fortune cookies", "debian": "Debian",
    "definitions": "definitions", "disclaimer": "disclaimers", "drugs": "drugs", "education": "education",
    "ethnic": "peoples and places", "food": "food", "fortunes": "fortune", "goedel": "logic",
    "humorists": "humor", "kids": "children", "knghtbrd": "Linux users", "law": "law", "linux": "Linux",
    "linuxcookie": "Linux", "literature": "literature", "love": "love", "magic": "magic",
    "medicine": "medicine", "men-women": "men and women", "miscellaneous": "life", "news": "the news",
    "paradoxum": "paradoxes", "people": "people", "perl": "Perl", "pets": "pets", "platitudes": "platitudes",
    "politics": "politics", "pratchett": "Terry Pratchett", "riddles": "riddles", "science": "science",
    "songs-poems": "songs and poems", "sports": "sports", "startrek": "Star Trek", "tao": "the Tao",
    "translate-me": "translation", "wisdom": "wisdom", "work": "work", "zippy": "Zippy the Pinhead",
}


class CorpusMissing(UserError):
    """A corpus whose Debian package is not installed."""

    def __init__(self, package: str, path: Path):
        self.package = package
        self.path = path
        super().__init__(f"The text corpus {path} is missing: install the Debian package {package} "
                         f"(sudo apt-get install {package}; scripts/setup.sh installs it).")


# -- records ---------------------------------------------------------------------------------
def _digest(text: str) -> str:
    import hashlib

    return hashlib.blake2s(text.encode("utf-8"), digest_size=6).hexdigest()


@dataclass(frozen=True)
class Poem:
    """A classical Chinese poem: title, author (with dates when given), body lines."""

    title: str
    author: str
    body: str
    source: str          # "tang300" or "song100"
    dates: str = ""      # "946-999" (song100 gives them)

    @property
    def kind(self) -> str:
        return "poem"

    @property
    def dynasty(self) -> str:
        return POEM_FILES.get(self.source, "")

    @property
    def key(self) -> str:
        return f"poem:{_digest(self.title + '|' + self.body)}"

    @property
    def text(self) -> str:
        return f"《{self.title}》\n{self.author}\n{self.body}"


@dataclass(frozen=True)
class Quote:
    """An English fortune: the quote, who said it (when the file says), its file as topic."""

    quote: str
    attribution: str
    topic: str           # the fortune file: "wisdom", "computers", ...

    @property
    def kind(self) -> str:
        return "quote"

    @property
    def topic_name(self) -> str:
        return TOPIC_NAMES.get(self.topic, self.topic.replace("-", " "))

    @property
    def key(self) -> str:
        return f"quote:{_digest(' '.join(self.quote.split()).lower())}"

    @property
    def text(self) -> str:
        return f"{self.quote}\n    -- {self.attribution}" if self.attribution else self.quote


@dataclass(frozen=True)
class Definition:
    """A dictionary entry: headword, part of speech ("n.", may be empty), definition text."""

    headword: str
    definition: str
    source: str          # "jargon" or "devil"
    grammar: str = ""

    @property
    def kind(self) -> str:
        return "definition"

    @property
    def key(self) -> str:
        return f"{self.source}:{self.headword.lower()}"

    @property
    def text(self) -> str:
        grammar = f", {self.grammar}" if self.grammar else ""
        return f"{self.headword}{grammar}: {self.definition}"


Record = Poem | Quote | Definition

# -- shared cleaning ---------------------------------------------------------------------------
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    """Text without terminal colour codes (``ESC[32m``)."""
    return _ANSI.sub("", text)


def strip_overstrike(line: str) -> str:
    """A line as a printer would show it: ``_\\bX`` (underline) and ``X\\bX`` (bold) become X."""
    if "\b" not in line:
        return line
    cells: list[str] = []
    pos = 0
    for ch in line:
        if ch == "\b":
            pos = max(pos - 1, 0)
            continue
        if pos < len(cells):
            if ch != "_":
                cells[pos] = ch
        else:
            cells.append(ch)
        pos += 1
    return "".join(cells)


def _read_text(path: Path, package: str) -> str:
    if not path.is_file():
        raise CorpusMissing(package, path)
    data = gzip.decompress(path.read_bytes()) if path.suffix in (".gz", ".dz") else path.read_bytes()
    return data.decode("utf-8", errors="replace")


def split_fortunes(text: str) -> list[str]:
    """Entries of a fortune file: separated by lines holding only ``%``."""
    entries, current = [], []
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.strip() == "%":
            entries.append("\n".join(current))
            current = []
        else:
            current.append(line)
    entries.append("\n".join(current))
    return [e.strip("\n") for e in entries if e.strip()]


# -- fortunes-zh -------------------------------------------------------------------------------
_TITLE = re.compile(r"^(?:题目\s*[:：]\s*)?(.*)$")
_AUTHOR = re.compile(r"^作者\s*[:：]\s*(.*?)\s*(?:[（(]([^）)]*)[）)])?\s*$")
_FULLWIDTH = str.maketrans("０１２３４５６７８９－", "0123456789-")


def _clean_title(raw: str) -> str:
    title = _TITLE.match(raw.strip()).group(1).strip()
    if title.startswith("《") and "》" in title:
        inner, _, rest = title[1:].partition("》")
        title = inner + rest.strip()
    return title.strip()


def parse_poems(text: str, source: str) -> list[Poem]:
    """Poems of a fortunes-zh file: a title line, an 作者 line, the body (colour codes removed)."""
    poems = []
    for entry in split_fortunes(strip_ansi(text)):
        lines = [ln.strip() for ln in entry.split("\n")]
        while lines and not lines[0]:
            lines.pop(0)
        if len(lines) < 3:
            continue
        match = _AUTHOR.match(lines[1])
        if not match:
            continue
        title = _clean_title(lines[0])
        author, dates = match.group(1).strip(), (match.group(2) or "").translate(_FULLWIDTH)
        body_lines: list[str] = []
        for ln in lines[2:]:
            if ln or (body_lines and body_lines[-1]):
                body_lines.append(ln)
        body = "\n".join(body_lines).strip()
        if title and author and body:
            poems.append(Poem(title, author, body, source, dates))
    return poems


def read_poems(folder: Path = FORTUNES_DIR, sources: Sequence[str] = ("tang300", "song100")) -> list[Poem]:
    """The Tang (313) and Song (94) poems of fortunes-zh."""
    poems: list[Poem] = []
    for name in sources:
        poems += parse_poems(_read_text(Path(folder) / name, "fortunes-zh"), name)
    return poems


# -- fortunes ----------------------------------------------------------------------------------
_ATTRIBUTION = re.compile(r"^\s+--\s*(\S.*)$")


def parse_quote(entry: str, topic: str) -> Quote | None:
    """One fortune as a quote and its attribution (the trailing ``-- Name`` lines)."""
    lines = [strip_overstrike(ln).expandtabs(4).rstrip() for ln in entry.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    attribution: list[str] = []
    for i in range(len(lines) - 1, 0, -1):
        match = _ATTRIBUTION.match(lines[i])
        if match:
            attribution = [match.group(1), *(ln.strip() for ln in lines[i + 1:])]
            lines = lines[:i]
            break
        if not lines[i].startswith((" ", "\t")) or i < len(lines) - 2:
            break  # attributions are the last one or two indented lines
    quote = textwrap.dedent("\n".join(lines)).strip("\n")
    if not quote.strip():
        return None
    return Quote(quote, " ".join(" ".join(attribution).split()), topic)


def read_quotes(folder: Path = FORTUNES_DIR, topics: Iterable[str] | None = None) -> list[Quote]:
    """English fortunes, every file of the fortunes packages but the Chinese ones and ascii-art."""
    folder = Path(folder)
    if topics is None:
        if not folder.is_dir():
            raise CorpusMissing("fortunes", folder)
        topics = sorted(p.name for p in folder.iterdir()
                        if p.is_file() and not p.is_symlink() and "." not in p.name and p.name not in NOT_QUOTES)
        if not topics:
            raise CorpusMissing("fortunes", folder / "fortunes")
    quotes = []
    for topic in topics:
        package = "fortunes-min" if topic in ("fortunes", "literature", "riddles") else "fortunes"
        for entry in split_fortunes(_read_text(folder / topic, package)):
            quote = parse_quote(entry, topic)
            if quote is not None:
                quotes.append(quote)
    return quotes


# -- jargon-text -------------------------------------------------------------------------------
_JARGON_HEAD = re.compile(r"^   :(?P<head>.+?):(?: (?P<rest>.*))?$")
_JARGON_LETTER = re.compile(r"^  [0-9A-Z]\s*$")
_PRONUNCIATION = re.compile(r"/[^/]*/,?\s*")


def _reflow(paragraph: list[str], indent: int) -> str:
    """Prose lines (all at ``indent``) joined into one line; anything indented deeper kept as is."""
    pad = " " * indent
    if all(ln.startswith(pad) and not ln.startswith(pad + " ") for ln in paragraph):
        return " ".join(ln.strip() for ln in paragraph)
    return textwrap.dedent("\n".join(paragraph)).rstrip()


def _paragraphs(lines: list[str]) -> list[list[str]]:
    out: list[list[str]] = [[]]
    for ln in lines:
        if ln.strip():
            out[-1].append(ln.rstrip())
        elif out[-1]:
            out.append([])
    return [p for p in out if p]


def parse_jargon(text: str) -> list[Definition]:
    """The lexicon entries of the Jargon File: ``:headword: pronunciation, n.`` and paragraphs."""
    lines = text.replace("\r\n", "\n").split("\n")
    start = next((i for i, ln in enumerate(lines) if ln.strip() == "Glossary" and not ln.startswith(" ")), 0)
    end = next((i for i, ln in enumerate(lines) if ln.startswith("Appendix A.")), len(lines))
    entries: list[Definition] = []
    head: tuple[str, str] | None = None
    body: list[str] = []

    def flush() -> None:
        if head is None:
            return
        paragraphs = [_reflow(p, 3) for p in _paragraphs(body)]
        definition = "\n\n".join(paragraphs)
        definition = re.sub(r"\{([^{}]*)\}", r"\1", definition).strip()  # {cross references}
        if definition:
            grammar = _PRONUNCIATION.sub("", head[1]).strip()
            entries.append(Definition(head[0], definition, "jargon", grammar))

    for ln in lines[start:end]:
        match = _JARGON_HEAD.match(ln)
        if match:
            flush()
            head, body = (match.group("head").strip(), match.group("rest") or ""), []
        elif _JARGON_LETTER.match(ln):
            flush()
            head, body = None, []  # a letter heading and its list of headwords
        elif head is not None:
            body.append(ln)
    flush()
    return entries


def read_jargon(path: Path = JARGON_PATH) -> list[Definition]:
    """The ~2,300 entries of the Jargon File (jargon-text)."""
    return parse_jargon(_read_text(Path(path), "jargon-text"))


# -- dict-devil --------------------------------------------------------------------------------
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def dictd_number(text: str) -> int:
    """A dictd index number (base 64, most significant digit first)."""
    value = 0
    for ch in text:
        value = value * 64 + _B64.index(ch)
    return value


_DEVIL_WORD = r"[A-Z0-9][A-Z0-9'.&\-]*(?![a-z])"
_DEVIL_HEAD = re.compile(rf"^(?P<head>{_DEVIL_WORD}(?:(?: | or |, | \(or |\) ){_DEVIL_WORD}\)?)*)")
_DEVIL_POS = re.compile(r"^(?P<pos>(?:[a-z]+\.\s?)+(?:(?:and|or)\s+(?:[a-z]+\.\s?)+)?)(?:\s+|$)")


def _devil_headword(raw: str) -> str:
    """"ABASEMENT" -> "abasement"; abbreviations with inner dots stay as printed ("LL.D.")."""
    raw = " ".join(raw.split())
    if "." in raw.rstrip("."):
        return raw if raw.endswith(".") else raw + "."
    return raw.rstrip(".").lower()


def parse_devil_entry(text: str, index_word: str) -> Definition | None:
    """One Devil's Dictionary article: ``WORD, n.  definition`` (verse and quotes kept).

    The letters ("I is the first letter of the alphabet ...") are sentences: their whole
    text is the definition and the index word the headword.
    """
    text = text.strip("\n").rstrip()
    if not text:
        return None
    headword, grammar, rest = index_word, "", text
    match = _DEVIL_HEAD.match(text)
    if match:
        after = text[match.end():].lstrip(",.? ")
        pos = _DEVIL_POS.match(after)
        if pos:
            headword, grammar, rest = _devil_headword(match.group("head")), pos.group("pos").strip(), after[pos.end():]
        elif not after[:1].islower() and not after.startswith("("):
            headword, rest = _devil_headword(match.group("head")), after
    paragraphs = []
    for para in _paragraphs(rest.split("\n")):
        verse = any(ln.startswith(" ") for ln in para[1:]) or para[0].startswith("    ")
        paragraphs.append(textwrap.dedent("\n".join(para)).rstrip() if verse else " ".join(ln.strip() for ln in para))
    definition = "\n\n".join(paragraphs).strip()
    if not definition:
        return None
    return Definition(headword, definition, "devil", grammar)


def read_devil(index: Path = DEVIL_INDEX, data: Path = DEVIL_DATA) -> list[Definition]:
    """The ~1,000 articles of Ambrose Bierce's Devil's Dictionary (dict-devil).

    The ``.index`` lists ``word<TAB>offset<TAB>length`` (base-64 numbers) into the
    uncompressed ``.dict.dz`` (dictzip: a gzip file). Two words pointing to one article
    ("babe", "baby") give one record.
    """
    index, data = Path(index), Path(data)
    for path in (index, data):
        if not path.is_file():
            raise CorpusMissing("dict-devil", path)
    raw = gzip.decompress(data.read_bytes())
    spans: dict[tuple[int, int], str] = {}
    for line in index.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or parts[0].startswith("00database") or parts[0].startswith("00-database"):
            continue
        try:
            span = (dictd_number(parts[1]), dictd_number(parts[2]))
        except ValueError:
            continue
        spans.setdefault(span, parts[0])
    entries = []
    for (offset, length), word in sorted(spans.items()):
        entry = parse_devil_entry(raw[offset:offset + length].decode("utf-8", errors="replace"), word)
        if entry is not None:
            entries.append(entry)
    return entries


# -- all of them -------------------------------------------------------------------------------
SOURCES = ("poems", "quotes", "jargon", "devil")
_READERS = {"poems": read_poems, "quotes": read_quotes, "jargon": read_jargon, "devil": read_devil}


def read_source(name: str) -> list[Record]:
    """The records of one source: "poems", "quotes", "jargon" or "devil"."""
    try:
        reader = _READERS[name]
    except KeyError:
        raise ValueError(f"unknown corpus {name!r}; choose from {SOURCES}") from None
    return list(reader())


def available_sources() -> dict[str, str | None]:
    """Each source: None when it can be read here, else the sentence saying what to install."""
    out: dict[str, str | None] = {}
    checks = {"poems": [FORTUNES_DIR / "tang300"], "quotes": [FORTUNES_DIR / "fortunes"],
              "jargon": [JARGON_PATH], "devil": [DEVIL_INDEX, DEVIL_DATA]}
    packages = {"poems": "fortunes-zh", "quotes": "fortunes-min", "jargon": "jargon-text", "devil": "dict-devil"}
    for name, paths in checks.items():
        missing = next((p for p in paths if not p.is_file()), None)
        out[name] = None if missing is None else str(CorpusMissing(packages[name], missing))
    return out


def read_all(sources: Sequence[str] = SOURCES, skip_missing: bool = False) -> dict[str, list[Record]]:
    """Records by source; a missing package raises :class:`CorpusMissing` unless ``skip_missing``."""
    out: dict[str, list[Record]] = {}
    for name in sources:
        try:
            out[name] = read_source(name)
        except CorpusMissing:
            if not skip_missing:
                raise
    return out


def corpus_stats(records: Sequence[Record]) -> tuple[int, int]:
    """(number of records, characters of their text)."""
    return len(records), sum(len(r.text) for r in records)

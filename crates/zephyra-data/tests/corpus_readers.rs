//! Corpus readers: every format, malformed and non-UTF-8 input, empty files, directories, globs, errors.

mod common;

use std::path::Path;

use zephyra_data::corpus::{Corpus, CorpusOptions, Document, Format, Input};
use zephyra_data::DataError;

fn corpus(specs: &[&Path]) -> Result<Corpus, DataError> {
    Corpus::from_specs(
        &specs
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>(),
        CorpusOptions::default(),
    )
}

/// A corpus of the one file `path` reading its text from `field`.
fn corpus_with_field(path: &Path, field: &str) -> Result<Corpus, DataError> {
    Corpus::from_specs(
        &[path.display().to_string()],
        CorpusOptions {
            text_field: field.into(),
        },
    )
}

/// Whole documents (pieces of one file joined).
fn texts(c: &Corpus) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for doc in c.documents() {
        let Document {
            text,
            ends_document,
        } = doc.unwrap();
        cur.push_str(&text);
        if ends_document {
            out.push(std::mem::take(&mut cur));
        }
    }
    out
}

#[test]
fn text_markdown_and_html_files() {
    let dir = tempfile::tempdir().unwrap();
    let txt = dir.path().join("a.txt");
    std::fs::write(&txt, "plain text\nsecond line\n").unwrap();
    let md = dir.path().join("b.md");
    std::fs::write(&md, "# Title\n\nSome *markdown*.").unwrap();
    let html = dir.path().join("c.html");
    std::fs::write(
        &html,
        "<!DOCTYPE html><html><head><title>x</title><script>var a = 1 < 2;</script></head><body>\
         <style>.p { color: red }</style><p>Caf&eacute; &amp; <b>bar</b>&nbsp;&#8212;&#x21;</p>\
         <script type=\"text/javascript\">document.write('<p>hidden</p>')</script><p>end</p></body></html>",
    )
    .unwrap();
    let c = corpus(&[&txt, &md, &html]).unwrap();
    assert_eq!(
        texts(&c),
        vec![
            "plain text\nsecond line\n".to_string(),
            "# Title\n\nSome *markdown*.".to_string(),
            "Café & bar —!\nend".to_string()
        ]
    );
    let stats = {
        let mut docs = c.documents();
        for d in docs.by_ref() {
            d.unwrap();
        }
        docs.stats().clone()
    };
    assert_eq!(
        (
            stats.n_files,
            stats.n_documents,
            stats.n_lossy,
            stats.n_malformed_lines
        ),
        (3, 3, 0, 0)
    );
}

#[test]
fn jsonl_skips_and_counts_malformed_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.jsonl");
    std::fs::write(
        &path,
        "{\"text\": \"first\"}\nnot json\n{\"other\": \"no text field\"}\n\n{\"text\": 42}\n{\"text\": \"second\", \"id\": 1}\n{\"text\": \"trunc",
    )
    .unwrap();
    let c = corpus(&[&path]).unwrap();
    let mut docs = c.documents();
    let got: Vec<String> = docs.by_ref().map(|d| d.unwrap().text).collect();
    assert_eq!(got, vec!["first", "second"]);
    // Lines 2, 3, 5 and 7 are malformed (line 4 is blank and ignored).
    assert_eq!(docs.stats().n_malformed_lines, 4);

    // Another field name.
    let custom = dir.path().join("e.jsonl");
    std::fs::write(&custom, "{\"body\": \"x\"}\n{\"body\": \"y\"}\n").unwrap();
    let c = corpus_with_field(&custom, "body").unwrap();
    assert_eq!(texts(&c), vec!["x", "y"]);
    // The default field on that file: every line malformed → a clear error naming --text-field.
    let c = corpus(&[&custom]).unwrap();
    let err = c.documents().find_map(|d| d.err()).expect("an error");
    assert!(
        matches!(err, DataError::NoTextField { n_lines: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("--text-field"), "{err}");
}

#[test]
fn non_utf8_bytes_are_replaced_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let txt = dir.path().join("bad.txt");
    std::fs::write(&txt, b"caf\xe9 ok\n\xff\xfe end").unwrap();
    let jsonl = dir.path().join("bad.jsonl");
    std::fs::write(&jsonl, b"{\"text\": \"a\xffb\"}\n{\"text\": \"fine\"}\n").unwrap();
    let c = corpus(&[&txt, &jsonl]).unwrap();
    let mut docs = c.documents();
    let got: Vec<String> = docs.by_ref().map(|d| d.unwrap().text).collect();
    assert_eq!(
        got,
        vec!["caf\u{fffd} ok\n\u{fffd}\u{fffd} end", "a\u{fffd}b", "fine"]
    );
    assert_eq!(docs.stats().n_lossy, 2);
}

#[test]
fn empty_files_give_no_documents() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["e.txt", "e.md", "e.html", "e.jsonl"] {
        std::fs::write(dir.path().join(name), "").unwrap();
    }
    std::fs::write(
        dir.path().join("blank.html"),
        "<html><body><script>x()</script></body></html>",
    )
    .unwrap();
    let c = corpus(&[dir.path()]).unwrap();
    assert_eq!(c.inputs().len(), 5);
    let mut docs = c.documents();
    assert_eq!(docs.by_ref().count(), 0);
    assert_eq!(docs.stats().n_files, 5);
    assert_eq!(docs.stats().n_documents, 0);
}

#[test]
fn directories_are_recursive_sorted_and_skip_unknown_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    std::fs::write(root.join("b.txt"), "B").unwrap();
    std::fs::write(root.join("a.md"), "A").unwrap();
    std::fs::write(root.join("image.png"), [0u8, 1, 2]).unwrap();
    std::fs::write(root.join("sub/c.html"), "<p>C</p>").unwrap();
    std::fs::write(
        root.join("sub/deeper/d.jsonl"),
        "{\"text\":\"D1\"}\n{\"text\":\"D2\"}\n",
    )
    .unwrap();
    std::fs::write(root.join("sub/z.txt"), "Z").unwrap();
    let c = corpus(&[root]).unwrap();
    let names: Vec<String> = c
        .inputs()
        .iter()
        .map(|i| match i {
            Input::File(p, _) => p.strip_prefix(root).unwrap().display().to_string(),
            Input::Stdin => "-".into(),
        })
        .collect();
    assert_eq!(
        names,
        vec![
            "a.md",
            "b.txt",
            "sub/c.html",
            "sub/deeper/d.jsonl",
            "sub/z.txt"
        ]
    );
    assert_eq!(texts(&c), vec!["A", "B", "C", "D1", "D2", "Z"]);
}

#[test]
fn globs_match_sorted_files() {
    let dir = tempfile::tempdir().unwrap();
    for (n, t) in [("x2.txt", "two"), ("x1.txt", "one"), ("y.txt", "other")] {
        std::fs::write(dir.path().join(n), t).unwrap();
    }
    let pattern = format!("{}/x*.txt", dir.path().display());
    let c = Corpus::from_specs(std::slice::from_ref(&pattern), CorpusOptions::default()).unwrap();
    assert_eq!(texts(&c), vec!["one", "two"]);
    let none = format!("{}/nothing*.txt", dir.path().display());
    let err = Corpus::from_specs(&[none], CorpusOptions::default()).unwrap_err();
    assert!(matches!(err, DataError::EmptyGlob { .. }), "{err}");
}

#[test]
fn long_text_files_stream_in_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.txt");
    let line = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n"; // 64 bytes
    let text = line.repeat(40_000); // 2.56 MB
    std::fs::write(&path, &text).unwrap();
    let c = corpus(&[&path]).unwrap();
    let pieces: Vec<Document> = c.documents().map(|d| d.unwrap()).collect();
    assert!(pieces.len() >= 3, "{} pieces", pieces.len());
    assert!(pieces.iter().all(|p| p.text.len() <= (1 << 20) + 64));
    assert_eq!(pieces.iter().filter(|p| p.ends_document).count(), 1);
    assert!(pieces.last().unwrap().ends_document);
    assert_eq!(
        pieces.iter().map(|p| p.text.as_str()).collect::<String>(),
        text
    );
}

/// A file without line breaks is cut into bounded pieces at whitespace (the space stays with the next
/// word), or at character boundaries when there is no whitespace either; nothing is lost or altered.
#[test]
fn text_without_line_breaks_streams_in_bounded_pieces() {
    const PIECE: usize = 256 << 10;
    let dir = tempfile::tempdir().unwrap();
    let words = dir.path().join("words.txt");
    let text = "the cat sat on the mat and ".repeat(5 * PIECE / 27); // 1.25 MiB, no \n
    std::fs::write(&words, &text).unwrap();
    let c = corpus(&[&words]).unwrap();
    let pieces: Vec<Document> = c.documents().map(|d| d.unwrap()).collect();
    assert!(pieces.len() >= 4, "{} pieces", pieces.len());
    for p in &pieces[..pieces.len() - 1] {
        assert!(
            p.text.len() >= PIECE && p.text.len() <= 2 * PIECE,
            "{}",
            p.text.len()
        );
        assert!(!p.text.ends_with(" "), "cut before the whitespace");
    }
    assert!(pieces[1..]
        .iter()
        .all(|p| p.text.is_empty() || p.text.starts_with(' ')));
    assert_eq!(pieces.iter().filter(|p| p.ends_document).count(), 1);
    assert_eq!(
        pieces.iter().map(|p| p.text.as_str()).collect::<String>(),
        text
    );

    // No whitespace and multi-byte characters (3 bytes each; 512 KiB is not a multiple of 3).
    let cjk = dir.path().join("cjk.txt");
    let text = "猫".repeat(PIECE + 7);
    std::fs::write(&cjk, &text).unwrap();
    let c = corpus(&[&cjk]).unwrap();
    let mut docs = c.documents();
    let pieces: Vec<Document> = docs.by_ref().map(|d| d.unwrap()).collect();
    assert_eq!(docs.stats().n_lossy, 0, "a character was split");
    assert!(pieces.len() >= 2);
    assert!(pieces.iter().all(|p| p.text.len() <= 2 * PIECE));
    assert_eq!(
        pieces.iter().map(|p| p.text.as_str()).collect::<String>(),
        text
    );
}

/// Devices, FIFOs and links to them inside a directory are skipped with a warning (reading `/dev/zero`
/// never ends; opening a FIFO without a writer blocks forever); a named one is skipped too.
#[cfg(unix)]
#[test]
fn special_files_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "real text").unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero.txt")).unwrap();
    let fifo = dir.path().join("pipe.txt");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo failed");
    let c = corpus(&[dir.path()]).unwrap();
    assert_eq!(
        c.inputs(),
        &[Input::File(dir.path().join("a.txt"), Format::Text)]
    );
    assert_eq!(texts(&c), vec!["real text"]);
    let named = corpus(&[&dir.path().join("zero.txt"), &fifo]).unwrap();
    assert!(named.inputs().is_empty(), "{:?}", named.inputs());
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.txt");
    let err = corpus(&[&missing]).unwrap_err();
    assert!(matches!(err, DataError::MissingPath { .. }), "{err}");
    assert!(err.to_string().contains("missing.txt"), "{err}");

    let odd = dir.path().join("data.bin");
    std::fs::write(&odd, "x").unwrap();
    let err = corpus(&[&odd]).unwrap_err();
    assert!(matches!(err, DataError::UnsupportedFile { .. }), "{err}");
}

#[test]
fn unreadable_file_is_an_error_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.txt");
    std::fs::write(&good, "fine").unwrap();
    // /proc/self/mem exists but cannot be read from offset 0: an unreadable file even for root.
    let unreadable = Path::new("/proc/self/mem");
    let c = Corpus::from_specs(&[good.display().to_string()], CorpusOptions::default()).unwrap();
    assert_eq!(texts(&c), vec!["fine"]);
    let path_as_text = dir.path().join("mem.txt");
    std::os::unix::fs::symlink(unreadable, &path_as_text).unwrap();
    let c = corpus(&[&path_as_text]).unwrap();
    let err = c
        .documents()
        .find_map(|d| d.err())
        .expect("reading /proc/self/mem fails");
    assert!(matches!(err, DataError::Io { .. }), "{err}");
    assert!(err.to_string().contains("mem.txt"), "{err}");
}

#[test]
fn formats_from_extensions() {
    assert_eq!(Format::from_path(Path::new("a.HTM")), Some(Format::Html));
    assert_eq!(
        Format::from_path(Path::new("a.ndjson")),
        Some(Format::Jsonl)
    );
    assert_eq!(
        Format::from_path(Path::new("a.markdown")),
        Some(Format::Text)
    );
    assert_eq!(Format::from_path(Path::new("a")), None);
}

#[test]
fn default_corpus_is_the_rust_docs_or_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = Corpus::rust_docs(dir.path()).unwrap_err();
    assert!(matches!(err, DataError::NoDefaultCorpus { .. }), "{err}");
    assert!(err.to_string().contains("--data"), "{err}");
    // A fake sysroot with one book page, its print.html and a redirect stub.
    let book = dir.path().join("share/doc/rust/html/book");
    std::fs::create_dir_all(&book).unwrap();
    std::fs::write(
        book.join("ch01.html"),
        "<nav>toc</nav><main><h1>Hello</h1><p>Ownership &amp; borrowing.</p></main>",
    )
    .unwrap();
    std::fs::write(
        book.join("print.html"),
        "<main><p>everything again</p></main>",
    )
    .unwrap();
    std::fs::write(book.join("old.html"), "<head><meta http-equiv=\"refresh\" content=\"0; URL=ch01.html\"></head><body>Redirecting</body>").unwrap();
    let c = Corpus::rust_docs(dir.path()).unwrap();
    assert_eq!(c.inputs().len(), 2);
    assert_eq!(texts(&c), vec!["Hello\nOwnership & borrowing."]);
    assert!(c.description().starts_with("rust-docs:"));
}

/// What `testdata/rust-docs/…/book/ch04-01-owning-values.html` reads as: the `<main>` of an mdBook page,
/// block tags as line breaks, the listing verbatim (its hidden `boring` lines included), entities decoded.
const OWNING_VALUES: &str = "Owning Values
Every value in a Rust program has exactly one owner, and the compiler checks this rule before the \
program runs \u{2014} there is no collector at run time.
Moves & Copies
Assigning a String to another variable moves it; the old name can\u{2019}t be used again.
Each value has an owner.
When the owner goes out of scope, the value is dropped.
fn main() {
    let v: Vec<u8> = vec![1, 2, 3];
    let w = v; // v moved into w
}
Listing 4-1: Moving a vector
Type
Moves?
i32
no, it is Copy";

/// What `testdata/rust-docs/…/reference/expressions/block-expr.html` reads as.
const BLOCK_EXPR: &str = "Block expressions
BlockExpression \u{2192} { Statements? }
A block\u{2019}s value is the value of its final operand, or () when there is none.
Note: a < b && c is an expression, not a tag.";

#[test]
fn a_rust_docs_sysroot_gives_the_text_of_its_book_pages() {
    // A miniature of rustup's rust-docs component (written for this test in the layout of mdBook's pages):
    // a chapter, a redirect stub, the print/toc/404 pages and an old-edition redirect tree that are left
    // out, files that are not HTML, a page of a second book in a subfolder, and API pages (`std/`) that
    // are not read. The real docs are not needed: rustup's `minimal` profile leaves them out.
    let sysroot = common::testdata::path("rust-docs");
    let root = sysroot.join("share/doc/rust/html");
    let c = Corpus::rust_docs(&sysroot).unwrap();
    let inputs: Vec<String> = c
        .inputs()
        .iter()
        .map(|input| match input {
            Input::File(path, Format::Html) => path
                .strip_prefix(&root)
                .expect("under the docs root")
                .display()
                .to_string(),
            other => panic!("not an HTML file: {other}"),
        })
        .collect();
    assert_eq!(
        inputs,
        [
            "book/ch04-00-old-title.html",
            "book/ch04-01-owning-values.html",
            "reference/expressions/block-expr.html"
        ]
    );
    assert_eq!(
        c.description(),
        format!("rust-docs:{} (book,reference)", root.display())
    );
    // The redirect stub gives no document.
    assert_eq!(texts(&c), [OWNING_VALUES, BLOCK_EXPR]);
}

#[cfg(feature = "parquet")]
#[test]
fn parquet_string_column() {
    use std::sync::Arc;

    use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.parquet");
    let schema = Arc::new(parse_message_type("message m { required int64 id; required binary text (UTF8); optional binary note (UTF8); }").unwrap());
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build(),
    );
    let file = std::fs::File::create(&path).unwrap();
    let mut writer = SerializedFileWriter::new(file, schema, props).unwrap();
    for group in [vec!["alpha", "beta"], vec!["", "gamma"]] {
        let mut rg = writer.next_row_group().unwrap();
        let mut col = rg.next_column().unwrap().unwrap();
        col.typed::<Int64Type>()
            .write_batch(&[1, 2], None, None)
            .unwrap();
        col.close().unwrap();
        let mut col = rg.next_column().unwrap().unwrap();
        let values: Vec<ByteArray> = group.iter().map(|s| ByteArray::from(*s)).collect();
        col.typed::<ByteArrayType>()
            .write_batch(&values, None, None)
            .unwrap();
        col.close().unwrap();
        let mut col = rg.next_column().unwrap().unwrap();
        col.typed::<ByteArrayType>()
            .write_batch(&[ByteArray::from("n")], Some(&[1, 0]), None)
            .unwrap();
        col.close().unwrap();
        rg.close().unwrap();
    }
    writer.close().unwrap();
    let c = corpus(&[&path]).unwrap();
    let mut docs = c.documents();
    let got: Vec<String> = docs.by_ref().map(|d| d.unwrap().text).collect();
    assert_eq!(got, vec!["alpha", "beta", "gamma"]);
    assert_eq!(docs.stats().n_empty, 1);
    // Another column by name; a missing column is a clear error listing the string columns.
    let c = corpus_with_field(&path, "note").unwrap();
    assert_eq!(texts(&c), vec!["n", "n"]);
    let c = corpus_with_field(&path, "body").unwrap();
    let err = c.documents().find_map(|d| d.err()).expect("error");
    assert!(err.to_string().contains("[text, note]"), "{err}");
}

#![cfg(feature = "central")] // drives central's side: the default `central` feature
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion
//! Snapshots over HTTPS against a real TLS server: what central builds verifies and imports,
//! a cut transfer resumes instead of restarting, and anything that does not match the
//! manifest (bytes, size, certificate, file name) is refused before it can reach the replica.

#[path = "support/https.rs"]
mod https;

use https::HttpsServer;
use relais::central::snapshot::{BuildError, MANIFEST_FILE, build};
use relais::replica::Stream;
use relais::replica::import::{ImportError, ImportReport, Progress, import_file};
use relais::sync::snapshot::{Manifest, ManifestEntry, SnapshotClient, SnapshotError};
use std::io::Write;
use std::path::{Path, PathBuf};

fn products(path: &Path, n: u64) -> PathBuf {
    relais::demo::write_products(path, n).unwrap();
    path.to_path_buf()
}

fn pinned_client(server: &HttpsServer) -> SnapshotClient {
    SnapshotClient::new(Some(&server.ca_file), None).unwrap()
}

fn no_progress() -> impl FnMut(u64, u64) + Send {
    |_, _| {}
}

fn part_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

fn sha256_hex(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    ring::digest::digest(&ring::digest::SHA256, &bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn stream_version_and_rows(replica: &Path, table: &str) -> (u64, u64) {
    let conn = rusqlite::Connection::open(replica).unwrap();
    let version: i64 = conn
        .query_row(
            "SELECT version FROM streams WHERE name = ?1",
            [table],
            |r| r.get(0),
        )
        .unwrap();
    let rows: i64 = conn
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap();
    (version as u64, rows as u64)
}

/// What the agent does on "must refetch": manifest, verified download, and only then import.
async fn fetch_and_import(
    client: &SnapshotClient,
    manifest_url: &str,
    stream: Stream,
    download_dir: &Path,
    replica: &Path,
) -> Result<ImportReport, SnapshotError> {
    let manifest = client.manifest(manifest_url).await?;
    let entry = manifest.entry(stream).expect("stream in manifest");
    let file = client
        .download(manifest_url, entry, download_dir, &mut no_progress())
        .await?;
    // A verified file that the import refuses would be a bug in central's build: fail loudly.
    Ok(import_file(replica, stream, &file, Some(entry.version), Progress::Quiet).unwrap())
}

#[tokio::test]
async fn a_manifest_and_its_file_download_and_verify_over_https_with_the_pinned_ca() {
    let work = tempfile::tempdir().unwrap();
    let served = work.path().join("served");
    let input = products(&work.path().join("products.ndjson"), 500);
    let built = build(&[(Stream::Products, input)], 42, &served).unwrap();
    let server = HttpsServer::start(&served);
    let client = pinned_client(&server);

    let manifest = client.manifest(&server.url(MANIFEST_FILE)).await.unwrap();
    assert_eq!(manifest, built);
    let entry = manifest.entry(Stream::Products).unwrap();
    assert_eq!(entry.file, "products-42.ndjson.gz");

    let downloads = work.path().join("downloads");
    let mut last = (0, 0);
    let mut progress = |done, total| last = (done, total);
    let path = client
        .download(&server.url(MANIFEST_FILE), entry, &downloads, &mut progress)
        .await
        .unwrap();
    assert_eq!(path, downloads.join(&entry.file));
    assert_eq!(last, (entry.bytes, entry.bytes));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), entry.bytes);
    assert_eq!(sha256_hex(&path), entry.sha256);
    assert!(!part_of(&path).exists(), "the part is renamed, not copied");
    let file_requests: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path == entry.file)
        .collect();
    assert_eq!(file_requests.len(), 1);
    assert_eq!(
        (file_requests[0].status, file_requests[0].range.clone()),
        (200, None)
    );

    // A second call finds the verified file in place and does not fetch it again.
    let again = client
        .download(
            &server.url(MANIFEST_FILE),
            entry,
            &downloads,
            &mut no_progress(),
        )
        .await
        .unwrap();
    assert_eq!(again, path);
    assert_eq!(server.body_bytes_served(&entry.file), entry.bytes);
}

#[tokio::test]
async fn a_download_cut_halfway_resumes_with_a_range_request_instead_of_restarting() {
    let work = tempfile::tempdir().unwrap();
    let served = work.path().join("served");
    let input = products(&work.path().join("products.ndjson"), 20_000);
    let manifest = build(&[(Stream::Products, input)], 3, &served).unwrap();
    let entry = manifest.entry(Stream::Products).unwrap().clone();
    assert!(
        entry.bytes > 100_000,
        "the file must span many chunks: {}",
        entry.bytes
    );
    let server = HttpsServer::start(&served);
    let client = pinned_client(&server);
    let manifest_url = server.url(MANIFEST_FILE);
    let downloads = work.path().join("downloads");
    let half = entry.bytes / 2;

    server.cut_next_response_after(half);
    let mut seen = 0;
    let mut progress = |done, _| seen = done;
    let cut = client
        .download(&manifest_url, &entry, &downloads, &mut progress)
        .await;
    match &cut {
        Err(SnapshotError::Interrupted { done, total, .. }) => {
            assert_eq!((*done, *total), (half, entry.bytes));
        }
        other => panic!("expected an interrupted download, got {other:?}"),
    }
    let part = part_of(&downloads.join(&entry.file));
    let part_len = std::fs::metadata(&part).unwrap().len();
    assert_eq!(part_len, half, "everything received before the cut is kept");
    assert_eq!(seen, half);
    assert!(!downloads.join(&entry.file).exists());

    let path = client
        .download(&manifest_url, &entry, &downloads, &mut no_progress())
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        std::fs::read(served.join(&entry.file)).unwrap()
    );
    assert!(!part.exists());

    let file_requests: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path == entry.file)
        .collect();
    assert_eq!(file_requests.len(), 2, "{file_requests:?}");
    assert_eq!(file_requests[0].range, None);
    assert_eq!(
        file_requests[1].range.as_deref(),
        Some(format!("bytes={part_len}-").as_str())
    );
    assert_eq!(file_requests[1].status, 206);
    let served_bytes = server.body_bytes_served(&entry.file);
    assert_eq!(served_bytes, entry.bytes, "each byte crossed the wire once");
    assert!(served_bytes < 2 * entry.bytes);
}

#[tokio::test]
async fn a_file_whose_sha256_does_not_match_is_refused_its_part_removed_and_the_old_replica_stays_live()
 {
    let work = tempfile::tempdir().unwrap();
    let replica = work.path().join("replica.db");
    let v1 = products(&work.path().join("v1.ndjson"), 50);
    import_file(&replica, Stream::Products, &v1, Some(1), Progress::Quiet).unwrap();
    assert_eq!(stream_version_and_rows(&replica, "products"), (1, 50));

    let served = work.path().join("served");
    let v2 = products(&work.path().join("v2.ndjson"), 80);
    let manifest = build(&[(Stream::Products, v2)], 2, &served).unwrap();
    let entry = manifest.entry(Stream::Products).unwrap();
    let served_file = served.join(&entry.file);
    let good = std::fs::read(&served_file).unwrap();
    let mut bad = good.clone();
    let middle = bad.len() / 2;
    bad[middle] ^= 0x01;
    std::fs::write(&served_file, &bad).unwrap();

    let server = HttpsServer::start(&served);
    let client = pinned_client(&server);
    let downloads = work.path().join("downloads");
    let url = server.url(MANIFEST_FILE);
    match fetch_and_import(&client, &url, Stream::Products, &downloads, &replica).await {
        Err(err @ SnapshotError::Checksum { .. }) => {
            let SnapshotError::Checksum {
                expected, actual, ..
            } = &err
            else {
                unreachable!()
            };
            assert_eq!(expected, &entry.sha256);
            assert_ne!(actual, expected);
            let text = err.to_string();
            assert!(
                text.contains(expected.as_str()) && text.contains(actual.as_str()),
                "{text}"
            );
        }
        other => panic!("expected a checksum refusal, got {other:?}"),
    }
    let target = downloads.join(&entry.file);
    assert!(!target.exists() && !part_of(&target).exists());
    assert_eq!(
        stream_version_and_rows(&replica, "products"),
        (1, 50),
        "the previous version stays live"
    );

    // Once central serves the right bytes, the same path imports version 2.
    std::fs::write(&served_file, &good).unwrap();
    let report = fetch_and_import(&client, &url, Stream::Products, &downloads, &replica)
        .await
        .unwrap();
    assert_eq!((report.version, report.rows), (2, 80));
    assert_eq!(stream_version_and_rows(&replica, "products"), (2, 80));
}

#[tokio::test]
async fn a_stale_part_larger_than_the_file_is_discarded_and_the_download_starts_from_zero() {
    let work = tempfile::tempdir().unwrap();
    let served = work.path().join("served");
    let input = products(&work.path().join("products.ndjson"), 200);
    let manifest = build(&[(Stream::Products, input)], 4, &served).unwrap();
    let entry = manifest.entry(Stream::Products).unwrap();
    let downloads = work.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let part = part_of(&downloads.join(&entry.file));
    std::fs::write(&part, vec![b'x'; entry.bytes as usize + 10]).unwrap();
    let server = HttpsServer::start(&served);

    let path = pinned_client(&server)
        .download(
            &server.url(MANIFEST_FILE),
            entry,
            &downloads,
            &mut no_progress(),
        )
        .await
        .unwrap();
    assert_eq!(sha256_hex(&path), entry.sha256);
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!((requests[0].status, requests[0].range.clone()), (200, None));
}

#[tokio::test]
async fn a_server_sending_more_bytes_than_the_manifest_lists_is_cut_off_and_its_part_deleted() {
    let work = tempfile::tempdir().unwrap();
    let served = work.path().join("served");
    let input = products(&work.path().join("products.ndjson"), 2_000);
    let manifest = build(&[(Stream::Products, input)], 5, &served).unwrap();
    let mut entry = manifest.entry(Stream::Products).unwrap().clone();
    let real = entry.bytes;
    entry.bytes = real - 100;
    let server = HttpsServer::start(&served);
    let client = pinned_client(&server);
    let downloads = work.path().join("downloads");
    let part = part_of(&downloads.join(&entry.file));

    // With Content-Length the excess is known before the body is read.
    let err = client
        .download(
            &server.url(MANIFEST_FILE),
            &entry,
            &downloads,
            &mut no_progress(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, SnapshotError::ServerSize { expected, offered, .. } if expected == real - 100 && offered == real),
        "{err:?}"
    );
    assert!(!part.exists());

    // Without it, the stream is cut as soon as it goes past the manifest's size.
    server
        .faults
        .omit_content_length
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let mut most = 0;
    let mut progress = |done, _| most = most.max(done);
    let err = client
        .download(
            &server.url(MANIFEST_FILE),
            &entry,
            &downloads,
            &mut progress,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, SnapshotError::Oversized { expected, received, .. } if expected == real - 100 && received > expected),
        "{err:?}"
    );
    assert!(
        most <= entry.bytes,
        "never reported more than the manifest lists"
    );
    assert!(!part.exists());
    assert!(!downloads.join(&entry.file).exists());
}

#[tokio::test]
async fn a_server_certificate_not_signed_by_the_pinned_ca_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let served = work.path().join("served");
    let input = products(&work.path().join("products.ndjson"), 10);
    build(&[(Stream::Products, input)], 1, &served).unwrap();
    let trusted = HttpsServer::start(&served);
    let impostor = HttpsServer::start(&served);
    let client = pinned_client(&trusted);

    let err = client
        .manifest(&impostor.url(MANIFEST_FILE))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, SnapshotError::Http { .. }), "{err:?}");
    assert!(
        text.to_lowercase().contains("certificate"),
        "the operator is told it is the certificate: {text}"
    );
    assert!(
        impostor.requests().is_empty(),
        "no HTTP request after a failed handshake"
    );

    // The same client trusts the server its CA signed.
    assert!(client.manifest(&trusted.url(MANIFEST_FILE)).await.is_ok());
}

#[tokio::test]
async fn a_manifest_with_a_path_traversal_file_name_or_an_unknown_field_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let served = work.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let sha = "0".repeat(64);
    let entry = |file: &str| {
        format!(
            r#"{{"stream":"products","version":2,"file":{},"bytes":10,"sha256":"{sha}"}}"#,
            serde_json::Value::String(file.into())
        )
    };
    let cases = [
        ("traversal.json", entry("../replica.db"), "`file`"),
        (
            "absolute.json",
            entry("https://evil.example/p.gz"),
            "`file`",
        ),
        ("rooted.json", entry("/var/lib/relais/replica.db"), "`file`"),
        ("backslash.json", entry("..\\replica.db"), "`file`"),
        (
            "unknown.json",
            entry("p.gz").replace(
                "\"bytes\"",
                "\"url\":\"https://evil.example/p.gz\",\"bytes\"",
            ),
            "unknown field `url`",
        ),
    ];
    for (name, streams, _) in &cases {
        std::fs::write(
            served.join(name),
            format!(r#"{{"v":1,"created_ms":1,"streams":[{streams}]}}"#),
        )
        .unwrap();
    }
    let server = HttpsServer::start(&served);
    let client = pinned_client(&server);
    for (name, _, needle) in &cases {
        match client.manifest(&server.url(name)).await {
            Err(SnapshotError::BadManifest { reason, .. }) => {
                assert!(reason.contains(needle), "{name}: {reason}");
            }
            other => panic!("{name}: expected a refused manifest, got {other:?}"),
        }
    }

    // An entry built by hand is checked too, before anything is requested or written.
    let downloads = work.path().join("downloads");
    let evil = ManifestEntry {
        stream: Stream::Products,
        version: 2,
        file: "../escaped.gz".into(),
        bytes: 10,
        sha256: sha.clone(),
    };
    server.clear_log();
    let err = client
        .download(
            &server.url("traversal.json"),
            &evil,
            &downloads,
            &mut no_progress(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, SnapshotError::BadManifest { .. }), "{err:?}");
    assert!(server.requests().is_empty());
    assert!(!work.path().join("escaped.gz").exists());
    assert!(!work.path().join("escaped.gz.part").exists());
}

#[tokio::test]
async fn central_snapshot_build_produces_a_manifest_whose_files_verify_and_import() {
    let work = tempfile::tempdir().unwrap();
    let hasher = relais::cards::CardHasher::new(&[7u8; 32]);
    let store = relais::demo::generate(
        &work.path().join("export"),
        relais::demo::StoreSize {
            products: 300,
            customers: 120,
        },
        &hasher,
        relais::storage::now_unix_ms(),
    )
    .unwrap();
    // One input arrives already compressed: it must be published as is, not compressed twice.
    let mut inputs = store.files.clone();
    let (_, products_plain) = inputs[0].clone();
    let products_gz = work.path().join("products-export.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&products_gz).unwrap(),
        flate2::Compression::fast(),
    );
    gz.write_all(&std::fs::read(&products_plain).unwrap())
        .unwrap();
    gz.finish().unwrap();
    inputs[0].1 = products_gz.clone();

    let served = work.path().join("served");
    let manifest = build(&inputs, 7, &served).unwrap();
    assert_eq!(manifest.v, 1);
    assert_eq!(manifest.streams.len(), Stream::ALL.len());
    assert_eq!(
        std::fs::read(served.join("products-7.ndjson.gz")).unwrap(),
        std::fs::read(&products_gz).unwrap()
    );
    let on_disk: Manifest =
        serde_json::from_slice(&std::fs::read(served.join(MANIFEST_FILE)).unwrap()).unwrap();
    assert_eq!(on_disk, manifest);
    let leftovers: Vec<_> = std::fs::read_dir(&served)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') || n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let server = HttpsServer::start(&served);
    let client = pinned_client(&server);
    let url = server.url(MANIFEST_FILE);
    let fetched = client.manifest(&url).await.unwrap();
    assert_eq!(fetched, manifest);
    let downloads = work.path().join("downloads");
    let replica = work.path().join("replica.db");
    for (entry, (stream, source)) in fetched.streams.iter().zip(&store.files) {
        assert_eq!(entry.stream, *stream);
        assert_eq!(entry.file, format!("{stream}-7.ndjson.gz"));
        let path = client
            .download(&url, entry, &downloads, &mut no_progress())
            .await
            .unwrap();
        assert_eq!(
            &std::fs::read(&path).unwrap()[..2],
            &[0x1f, 0x8b],
            "{}",
            entry.file
        );
        let report = import_file(
            &replica,
            *stream,
            &path,
            Some(entry.version),
            Progress::Quiet,
        )
        .unwrap();
        let lines = std::fs::read_to_string(source)
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count() as u64;
        assert_eq!((report.version, report.rows), (7, lines), "{stream}");
    }
}

#[test]
fn central_snapshot_build_refuses_an_invalid_file_and_publishes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("products.ndjson");
    std::fs::write(
        &input,
        concat!(
            r#"{"gtin":"4006381333931","sku":"SKU-1","name":"Milk"}"#,
            "\n",
            r#"{"gtin":"4006381333932","sku":"SKU-2","name":"Bad check digit"}"#,
            "\n"
        ),
    )
    .unwrap();
    let served = work.path().join("served");
    let err = build(&[(Stream::Products, input.clone())], 9, &served).unwrap_err();
    match &err {
        BuildError::Invalid { path, source, .. } => {
            assert_eq!(path, &input);
            assert!(
                matches!(**source, ImportError::BadLine { line: 2, .. }),
                "{source:?}"
            );
        }
        other => panic!("expected an invalid input, got {other:?}"),
    }
    assert!(err.to_string().contains("line 2"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&served)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "nothing published: {left:?}");

    let twice = build(
        &[(Stream::Products, input.clone()), (Stream::Products, input)],
        9,
        &served,
    )
    .unwrap_err();
    assert!(
        matches!(twice, BuildError::DuplicateStream { .. }),
        "{twice:?}"
    );
}

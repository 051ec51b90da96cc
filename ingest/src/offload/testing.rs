//! A fake S3 for the unit tests of the S3 path: an in-memory bucket that records every call
//! and checks what S3 would (part numbers in order, inner parts of at least 5 MiB).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::offload::PART_BYTES;
use crate::offload::s3::{PayloadStore, StoreError, StoreFuture, UploadedPart};

/// An in-memory bucket that records every call; fails or stalls one operation when told to.
#[derive(Debug, Default)]
pub(crate) struct FakePayloadStore {
    pub(crate) calls: Mutex<Vec<&'static str>>,
    pub(crate) objects: Mutex<BTreeMap<String, Vec<u8>>>,
    uploads: Mutex<BTreeMap<String, Vec<(i32, Bytes)>>>,
    pub(crate) fail: Mutex<Option<&'static str>>,
    pub(crate) stall: AtomicBool,
}

impl FakePayloadStore {
    pub(crate) fn calls(&self) -> Vec<&'static str> {
        self.calls.lock().expect("not poisoned").clone()
    }

    pub(crate) fn objects(&self) -> BTreeMap<String, Vec<u8>> {
        self.objects.lock().expect("not poisoned").clone()
    }

    fn call<T: Send + 'static>(
        &self,
        operation: &'static str,
        then: impl FnOnce() -> T + Send + 'static,
    ) -> StoreFuture<'_, T> {
        self.calls.lock().expect("not poisoned").push(operation);
        let fail = *self.fail.lock().expect("not poisoned") == Some(operation);
        let stall = fail && self.stall.load(Ordering::Relaxed);
        Box::pin(async move {
            if stall {
                std::future::pending::<()>().await;
            }
            if fail {
                return Err(StoreError {
                    operation,
                    message: "injected".to_owned(),
                });
            }
            Ok(then())
        })
    }
}

/// The fake shared between the test and the state.
#[derive(Debug, Clone, Default)]
pub(crate) struct SharedFakePayloadStore(pub(crate) Arc<FakePayloadStore>);

impl PayloadStore for SharedFakePayloadStore {
    fn bucket(&self) -> &str {
        "payloads"
    }

    fn check_bucket(&self) -> StoreFuture<'_, ()> {
        self.0.call("HeadBucket", || ())
    }

    fn create_upload<'a>(&'a self, key: &'a str) -> StoreFuture<'a, String> {
        let fake = Arc::clone(&self.0);
        let key = key.to_owned();
        self.0.call("CreateMultipartUpload", move || {
            fake.uploads
                .lock()
                .expect("not poisoned")
                .insert(key.clone(), Vec::new());
            format!("upload-of-{key}")
        })
    }

    fn upload_part<'a>(
        &'a self,
        key: &'a str,
        _upload_id: &'a str,
        number: i32,
        body: Bytes,
    ) -> StoreFuture<'a, String> {
        let fake = Arc::clone(&self.0);
        let key = key.to_owned();
        self.0.call("UploadPart", move || {
            let mut uploads = fake.uploads.lock().expect("not poisoned");
            uploads.entry(key).or_default().push((number, body));
            format!("etag-{number}")
        })
    }

    fn complete_upload<'a>(
        &'a self,
        key: &'a str,
        _upload_id: &'a str,
        parts: &'a [UploadedPart],
    ) -> StoreFuture<'a, ()> {
        let fake = Arc::clone(&self.0);
        let key = key.to_owned();
        let numbers: Vec<i32> = parts.iter().map(|part| part.number).collect();
        self.0.call("CompleteMultipartUpload", move || {
            let uploaded = fake
                .uploads
                .lock()
                .expect("not poisoned")
                .remove(&key)
                .expect("an upload");
            assert_eq!(numbers, (1..=uploaded.len() as i32).collect::<Vec<_>>());
            for (index, (_, part)) in uploaded.iter().enumerate() {
                if index + 1 < uploaded.len() {
                    assert!(part.len() >= PART_BYTES, "S3 refuses small inner parts");
                }
            }
            let object = uploaded.into_iter().flat_map(|(_, part)| part).collect();
            fake.objects
                .lock()
                .expect("not poisoned")
                .insert(key, object);
        })
    }

    fn abort_upload<'a>(&'a self, key: &'a str, _upload_id: &'a str) -> StoreFuture<'a, ()> {
        let fake = Arc::clone(&self.0);
        let key = key.to_owned();
        self.0.call("AbortMultipartUpload", move || {
            fake.uploads.lock().expect("not poisoned").remove(&key);
        })
    }

    fn put_object<'a>(&'a self, key: &'a str, body: Bytes) -> StoreFuture<'a, ()> {
        let fake = Arc::clone(&self.0);
        let key = key.to_owned();
        self.0.call("PutObject", move || {
            let object = body.to_vec();
            fake.objects
                .lock()
                .expect("not poisoned")
                .insert(key, object);
        })
    }
}

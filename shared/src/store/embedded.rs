//! An in-process DynamoDB-compatible engine (Dynoxide, SQLite-backed) serving the real
//! DynamoDB HTTP API on a loopback port, with the table created from `infra/table.json`.
//! For tests and the sandbox only (feature `embedded`); the function binaries never link it.

use std::path::Path;

use aws_sdk_dynamodb::Client;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{ClientSettings, StoreError, connect_static, create_table};

/// Region the embedded engine's clients claim; any fixed value works.
pub const REGION: &str = "us-east-1";

/// Where the engine keeps its data.
#[derive(Debug, Clone)]
pub enum Storage<'a> {
    Memory,
    /// A SQLite file, kept across restarts (the sandbox's `.local/`).
    File(&'a Path),
}

/// A running engine. Dropping it stops the server (the background task ends).
pub struct Embedded {
    endpoint: String,
    client: Client,
    db: dynoxide::Database,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), String>>>,
}

impl Embedded {
    /// Starts an engine on `127.0.0.1:<free port>` and, if `table_name` does not exist yet,
    /// creates it. Must run inside a tokio runtime.
    pub async fn start(
        storage: Storage<'_>,
        table_name: &str,
        settings: &ClientSettings,
    ) -> Result<Embedded, StoreError> {
        let db = match storage {
            Storage::Memory => dynoxide::Database::memory(),
            Storage::File(path) => dynoxide::Database::new(&path.to_string_lossy()),
        }
        .map_err(|e| StoreError::Setup(format!("Dynoxide database: {e}")))?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| StoreError::Setup(format!("bind 127.0.0.1:0: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| StoreError::Setup(format!("local address: {e}")))?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(dynoxide::server::serve_with_shutdown(
            listener,
            db.clone(),
            async move {
                // A dropped sender stops the server as well.
                let _ = rx.await;
            },
        ));
        let endpoint = format!("http://{addr}");
        let client = connect_static(&endpoint, REGION, settings);
        let engine = Embedded {
            endpoint,
            client,
            db,
            shutdown: Some(tx),
            task: Some(task),
        };
        if !engine.table_exists(table_name).await? {
            create_table(&engine.client, table_name).await?;
        }
        Ok(engine)
    }

    /// An in-memory engine with `table_name`, with settings for a busy test machine.
    pub async fn memory(table_name: &str) -> Result<Embedded, StoreError> {
        Self::start(Storage::Memory, table_name, &ClientSettings::local()).await
    }

    /// `http://127.0.0.1:<port>`: point any DynamoDB client here (`DYNAMODB_ENDPOINT`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Deletes items whose `ttl` has passed, as DynamoDB's TTL eventually does (Dynoxide only
    /// sweeps when asked; the sandbox calls this on a timer). Returns how many were deleted.
    pub async fn sweep_ttl(&self) -> Result<usize, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.sweep_ttl())
            .await
            .map_err(|e| StoreError::Setup(format!("TTL sweep task: {e}")))?
            .map_err(|e| StoreError::Setup(format!("TTL sweep: {e}")))
    }

    async fn table_exists(&self, table_name: &str) -> Result<bool, StoreError> {
        match self
            .client
            .describe_table()
            .table_name(table_name)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(super::error::from_sdk("DescribeTable", e)),
        }
    }

    /// Stops the server and waits until it has finished serving.
    pub async fn stop(mut self) -> Result<(), StoreError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task
                .await
                .map_err(|e| StoreError::Setup(format!("Dynoxide task: {e}")))?
                .map_err(StoreError::Setup),
            None => Ok(()),
        }
    }
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

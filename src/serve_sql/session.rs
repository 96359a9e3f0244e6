//! One client session of the SQL server: its startup (an optional password) and its queries.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use duckdb::arrow::record_batch::RecordBatch;
use duckdb::Connection;
use futures::Sink;
use pgwire::api::auth::cleartext::CleartextPasswordAuthStartupHandler;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use pgwire::api::query::SimpleQueryHandler;
use pgwire::api::results::{QueryResponse, Response};
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireServerHandlers};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use super::encode;

/// What every session shares: the connection sessions clone theirs from, and the password.
pub struct Sessions {
    pub base: Mutex<Connection>,
    pub password: Option<String>,
}

/// The handlers of one client connection.
pub struct Handlers {
    session: Arc<Session>,
    startup: Arc<Startup>,
}

impl Handlers {
    pub fn new(sessions: Arc<Sessions>) -> Self {
        let startup = Arc::new(Startup::new(sessions.password.clone()));
        Handlers {
            session: Arc::new(Session {
                sessions,
                connection: Arc::new(Mutex::new(None)),
            }),
            startup,
        }
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.session)
    }

    // The extended protocol (prepared statements with parameters) is refused with a clear
    // error; psql and the DuckDB-style tools this serves use simple queries.
    fn extended_query_handler(&self) -> Arc<impl pgwire::api::query::ExtendedQueryHandler> {
        Arc::new(pgwire::api::NoopHandler)
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::clone(&self.startup)
    }
}

/// A session's own connection, cloned from the writer's database on its first query.
pub struct Session {
    sessions: Arc<Sessions>,
    connection: Arc<Mutex<Option<Connection>>>,
}

/// SQLSTATE 25006, `read_only_sql_transaction`: what Postgres answers to a write on a standby.
const READ_ONLY: &str = "25006";
/// SQLSTATE 42000, `syntax_error_or_access_rule_violation`: DuckDB's errors (unknown table, bad
/// syntax, wrong types) all land in this class.
const QUERY_FAILED: &str = "42000";

fn user_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_owned(),
        code.to_owned(),
        message,
    )))
}

impl Session {
    /// Runs one read-only statement on this session's connection, in a transaction that is
    /// rolled back, off the server's thread.
    async fn run(&self, sql: &str) -> PgWireResult<Response> {
        if let Err(reason) = tidewater_sinks::statement::check_read_only(sql) {
            return Err(user_error(
                READ_ONLY,
                format!("tidewater serves the warehouse read-only: {reason}"),
            ));
        }
        let sessions = Arc::clone(&self.sessions);
        let connection = Arc::clone(&self.connection);
        let sql = sql.to_owned();
        let ran = tokio::task::spawn_blocking(move || {
            let mut connection = connection.lock().unwrap_or_else(|e| e.into_inner());
            if connection.is_none() {
                let base = sessions.base.lock().unwrap_or_else(|e| e.into_inner());
                *connection = Some(base.try_clone().map_err(|e| e.to_string())?);
            }
            let connection = connection.as_ref().expect("set just above");
            read_in_rolled_back_transaction(connection, &sql)
        })
        .await
        .map_err(|e| user_error(QUERY_FAILED, format!("the query stopped: {e}")))?;
        let (schema, batches) = ran.map_err(|e| user_error(QUERY_FAILED, e))?;
        let fields = encode::fields(&schema);
        let rows = encode::rows(&batches, &fields)?;
        Ok(Response::Query(QueryResponse::new(
            fields,
            futures::stream::iter(rows.into_iter().map(Ok)),
        )))
    }
}

/// The statement's result, read in a transaction that is always rolled back: it sees one
/// committed snapshot and can leave nothing behind.
fn read_in_rolled_back_transaction(
    connection: &Connection,
    sql: &str,
) -> Result<(duckdb::arrow::datatypes::SchemaRef, Vec<RecordBatch>), String> {
    connection
        .execute_batch("BEGIN TRANSACTION")
        .map_err(|e| e.to_string())?;
    let read = (|| {
        let mut statement = connection.prepare(sql)?;
        let arrow = statement.query_arrow([])?;
        let schema = arrow.get_schema();
        Ok::<_, duckdb::Error>((schema, arrow.collect()))
    })();
    let rolled_back = connection.execute_batch("ROLLBACK");
    let read = read.map_err(|e| e.to_string())?;
    rolled_back.map_err(|e| e.to_string())?;
    Ok(read)
}

#[async_trait]
impl SimpleQueryHandler for Session {
    async fn do_query<C>(&self, _client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        Ok(vec![self.run(query).await?])
    }
}

/// Startup: a cleartext password when one is set, otherwise none.
pub struct Startup {
    password:
        Option<CleartextPasswordAuthStartupHandler<PasswordSource, DefaultServerParameterProvider>>,
}

impl Startup {
    fn new(password: Option<String>) -> Self {
        Startup {
            password: password.map(|password| {
                CleartextPasswordAuthStartupHandler::new(
                    PasswordSource(password),
                    DefaultServerParameterProvider::default(),
                )
            }),
        }
    }
}

struct NoPassword;

impl NoopStartupHandler for NoPassword {}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match &self.password {
            Some(handler) => handler.on_startup(client, message).await,
            None => NoPassword.on_startup(client, message).await,
        }
    }
}

/// The one password every user must give (from `TIDEWATER_SERVE_PASSWORD`).
#[derive(Debug)]
pub struct PasswordSource(String);

#[async_trait]
impl AuthSource for PasswordSource {
    async fn get_password(&self, _login: &LoginInfo) -> PgWireResult<Password> {
        Ok(Password::new(None, self.0.as_bytes().to_vec()))
    }
}

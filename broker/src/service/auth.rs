//! The `Auth` service: password logins (SCRAM-SHA-256) that earn a token
//! every broker of the cluster accepts. The exchange itself is
//! `strand_security::scram`; this file reads the user's stored keys from the
//! metadata, runs the four messages over one stream, and counts failures.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use strand_proto::v1 as pb;
use strand_security::scram::{self, ScramServer};
use tonic::{Request, Response, Status, Streaming};

use crate::error::BrokerError;
use crate::node::Node;

/// How long a client has to send its next message.
const STEP_LIMIT: Duration = Duration::from_secs(10);

/// The `Auth` service.
#[derive(Clone, Debug)]
pub struct AuthService {
    node: Arc<Node>,
}

impl AuthService {
    /// A service over `node`'s metadata.
    pub fn new(node: Arc<Node>) -> Self {
        AuthService { node }
    }
}

fn failed(reason: &str) -> Status {
    BrokerError::AuthenticationFailed { reason: reason.into() }.into()
}

async fn next(inbound: &mut Streaming<pb::AuthMessage>) -> Result<pb::AuthMessage, Status> {
    match tokio::time::timeout(STEP_LIMIT, inbound.message()).await {
        Ok(Ok(Some(m))) => Ok(m),
        Ok(Ok(None)) => Err(failed("the client ended the exchange")),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(failed("the client did not answer in time")),
    }
}

/// Runs one exchange; the messages to send go to `out`.
async fn exchange(
    node: &Node,
    mut inbound: Streaming<pb::AuthMessage>,
    out: &tokio::sync::mpsc::Sender<Result<pb::AuthMessage, Status>>,
) -> Result<pb::AuthMessage, Status> {
    let first = next(&mut inbound).await?;
    if first.mechanism != scram::MECHANISM {
        return Err(failed(&format!(
            "unsupported mechanism {:?} (use {})",
            first.mechanism,
            scram::MECHANISM
        )));
    }
    let user = scram::client_first_user(&first.payload)
        .map_err(|e| failed(&e.to_string()))?
        .to_string();
    let credential = node.with_metadata(|m| m.users.get(&user).and_then(|c| c.to_scram()));
    let (server, server_first) = ScramServer::start(&first.payload, credential, node.security().decoy_key())
        .map_err(|e| failed(&e.to_string()))?;
    let answer = pb::AuthMessage {
        payload: server_first,
        ..Default::default()
    };
    if out.send(Ok(answer)).await.is_err() {
        return Err(failed("the client went away"));
    }
    let last = next(&mut inbound).await?;
    let claimed = format!("User:{user}");
    let server_final = server.finish(&last.payload).map_err(|e| {
        node.security().audit().authentication_failed(&claimed, &e.to_string());
        failed("unknown user or wrong password")
    })?;
    let lifetime = node.security().config().token_lifetime_ms as i64;
    let expires = strand_storage::now_ms() + lifetime;
    let Some(key) = node.with_metadata(|m| m.users.token_key().map(<[u8]>::to_vec)) else {
        return Err(failed("no user exists"));
    };
    Ok(pb::AuthMessage {
        mechanism: String::new(),
        payload: server_final,
        token: scram::sign_token(&key, &user, expires),
        token_expires_ms: expires,
    })
}

type Answers = Pin<Box<dyn Stream<Item = Result<pb::AuthMessage, Status>> + Send>>;

#[tonic::async_trait]
impl pb::auth_server::Auth for AuthService {
    type AuthenticateStream = Answers;

    async fn authenticate(
        &self,
        req: Request<Streaming<pb::AuthMessage>>,
    ) -> Result<Response<Self::AuthenticateStream>, Status> {
        let inbound = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let node = Arc::clone(&self.node);
        tokio::spawn(async move {
            let last = exchange(&node, inbound, &tx).await;
            let _ = tx.send(last).await;
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

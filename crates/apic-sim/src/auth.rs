//! Sessions: tokens with an idle lifetime, refresh, logout, and the login/refresh throttle
//! (`commHttps.throttleRate`, reference §1.7).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone)]
struct Token {
    user: String,
    expires: Instant,
}

/// A freshly issued session token.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    pub user: String,
    pub created_epoch: u64,
}

/// All live sessions.
#[derive(Debug, Default)]
pub struct Sessions {
    tokens: HashMap<String, Token>,
    recent: VecDeque<Instant>,
}

fn new_token() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::thread_rng().gen();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    /// Records a login/refresh attempt; `false` when more than `rate` happened in the last second.
    pub fn admit(&mut self, rate: Option<u32>) -> bool {
        let Some(rate) = rate else { return true };
        let now = Instant::now();
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= rate as usize {
            return false;
        }
        self.recent.push_back(now);
        true
    }

    /// Issues a token for `user` valid for `lifetime`.
    pub fn issue(&mut self, user: &str, lifetime: Duration) -> Issued {
        let token = new_token();
        self.tokens.insert(
            token.clone(),
            Token {
                user: user.to_string(),
                expires: Instant::now() + lifetime,
            },
        );
        let created_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Issued {
            token,
            user: user.to_string(),
            created_epoch,
        }
    }

    /// The user of a live token.
    pub fn user(&mut self, token: &str) -> Option<String> {
        let now = Instant::now();
        self.tokens.retain(|_, t| t.expires > now);
        self.tokens.get(token).map(|t| t.user.clone())
    }

    pub fn revoke(&mut self, token: &str) {
        self.tokens.remove(token);
    }

    /// Ends every session (tests: "the token expired in the middle of work").
    pub fn expire_all(&mut self) {
        self.tokens.clear();
    }
}

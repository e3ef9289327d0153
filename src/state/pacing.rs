//! `max_messages_per_minute` shared by every instance: one script over one key
//! per smarthost entry (see `upstream::pacing` for the rule).

use super::keys::Keys;
use super::link::Link;
use crate::upstream::pacing::{Claim, SharedPacing};
use redis::Script;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub struct SharedPace {
    link: Arc<Link>,
    keys: Keys,
    script: Script,
}

impl SharedPace {
    pub fn new(link: Arc<Link>, keys: Keys) -> SharedPace {
        SharedPace {
            link,
            keys,
            script: Script::new(include_str!("lua/pace.lua")),
        }
    }
}

impl SharedPacing for SharedPace {
    fn claim<'a>(
        &'a self,
        key: &'a str,
        interval: Duration,
        max_wait: Duration,
    ) -> Pin<Box<dyn Future<Output = Option<Claim>> + Send + 'a>> {
        Box::pin(async move {
            let name = self.keys.pacing(key);
            let (claimed, wait): (i64, u64) = self
                .link
                .run("pacing", |mut c| {
                    let mut inv = self.script.prepare_invoke();
                    inv.key(name)
                        .arg(interval.as_millis() as u64)
                        .arg(max_wait.as_millis() as u64);
                    async move { inv.invoke_async(&mut c).await }
                })
                .await?;
            let wait = Duration::from_millis(wait);
            Some(if claimed == 1 { Ok(wait) } else { Err(wait) })
        })
    }
}

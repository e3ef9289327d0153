//! Caps on concurrent connections, globally and per client address: a permit per
//! admitted connection, released when its session ends.

use crate::lock::MutexExt;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Caps on concurrent connections, globally and per client address.
pub struct ConnectionLimits {
    global: Arc<Semaphore>,
    max_global: usize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_per_ip: usize,
}

/// One admitted connection; releases its slots when dropped.
pub struct Admission {
    _global: OwnedSemaphorePermit,
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut map = self.limits.per_ip.locked();
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Global,
    PerIp,
}

impl ConnectionLimits {
    pub fn new(max_global: usize, max_per_ip: usize) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits {
            global: Arc::new(Semaphore::new(max_global)),
            max_global,
            per_ip: Mutex::new(HashMap::new()),
            max_per_ip,
        })
    }

    /// Admits a connection from `ip`, or says which cap it hit.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admission, Refusal> {
        let global = self
            .global
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Global)?;
        let mut map = self.per_ip.locked();
        let n = map.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return Err(Refusal::PerIp);
        }
        *n += 1;
        Ok(Admission {
            _global: global,
            limits: self.clone(),
            ip,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max_global - self.global.available_permits()
    }

    /// Waits until every connection has ended, or `limit` passes.
    pub(super) async fn drained(&self, limit: Duration) -> bool {
        let all = u32::try_from(self.max_global).unwrap_or(u32::MAX);
        tokio::time::timeout(limit, self.global.acquire_many(all))
            .await
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_caps() {
        let limits = ConnectionLimits::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = limits.admit(a).unwrap();
        let a2 = limits.admit(a).unwrap();
        assert_eq!(limits.admit(a).err(), Some(Refusal::PerIp));
        let b1 = limits.admit(b).unwrap();
        assert_eq!(limits.admit(b).err(), Some(Refusal::Global));
        assert_eq!(limits.open(), 3);
        drop(a1);
        assert!(limits.admit(a).is_ok());
        drop((a2, b1));
        assert_eq!(limits.open(), 0);
        assert!(limits.per_ip.lock().unwrap().is_empty());
    }
}

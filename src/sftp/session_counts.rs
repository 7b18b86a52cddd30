//! Sessions per account, so one account cannot take every slot.

use std::collections::HashMap;

#[derive(Debug, Default)]
pub struct SessionCounts {
    by_account: HashMap<String, usize>,
}

impl SessionCounts {
    /// Takes a slot for `account` unless it already has `limit`.
    pub fn try_take(&mut self, account: &str, limit: usize) -> bool {
        let n = self.by_account.entry(account.to_string()).or_default();
        if *n >= limit {
            return false;
        }
        *n += 1;
        true
    }

    pub fn give_back(&mut self, account: &str) {
        if let Some(n) = self.by_account.get_mut(account) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.by_account.remove(account);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_slots_per_account() {
        let mut s = SessionCounts::default();
        assert!(s.try_take("a", 2));
        assert!(s.try_take("a", 2));
        assert!(!s.try_take("a", 2));
        assert!(s.try_take("b", 2));
        s.give_back("a");
        assert!(s.try_take("a", 2));
    }
}

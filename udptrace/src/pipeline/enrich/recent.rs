//! Answers about sockets given lately: a flood of errors about one flow, socket or process asks once a
//! second, whatever the answer costs (a netlink exchange, a request to the helper, a /proc read).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

/// An answer stands this long: a flood of errors about one flow or socket asks once.
const REMEMBER: Duration = Duration::from_secs(1);
/// At most this many answers are remembered.
const MAX_REMEMBERED: usize = 4096;

/// Answers about sockets given lately, each standing for [`REMEMBER`], at most [`MAX_REMEMBERED`] of them.
pub struct Recent<K, V> {
    answers: HashMap<K, (Instant, V)>,
}

impl<K, V> Default for Recent<K, V> {
    fn default() -> Self {
        Self { answers: HashMap::new() }
    }
}

impl<K: std::hash::Hash + Eq, V: Clone> Recent<K, V> {
    /// The answer for `key` given less than [`REMEMBER`] ago, else `ask`'s, remembered.
    pub fn get_or_ask(&mut self, key: K, ask: impl FnOnce() -> V) -> V {
        if let Some(answer) = self.recall(&key) {
            return answer;
        }
        let answer = ask();
        self.remember(key, answer.clone());
        answer
    }

    /// The answer for `key` given less than [`REMEMBER`] ago.
    pub fn recall(&self, key: &K) -> Option<V> {
        self.answers.get(key).filter(|(at, _)| at.elapsed() < REMEMBER).map(|(_, answer)| answer.clone())
    }

    /// Remembers `answer` for `key`, from now.
    pub fn remember(&mut self, key: K, answer: V) {
        if self.answers.len() >= MAX_REMEMBERED {
            self.answers.retain(|_, (at, _)| at.elapsed() < REMEMBER);
            if self.answers.len() >= MAX_REMEMBERED {
                self.answers.clear();
            }
        }
        self.answers.insert(key, (Instant::now(), answer));
    }

    #[cfg(test)]
    pub fn clear(&mut self) {
        self.answers.clear();
    }
}

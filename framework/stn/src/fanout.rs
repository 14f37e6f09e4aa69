//! A broadcast channel whose slots are allocated at the first subscription.
//!
//! A tokio broadcast channel allocates all its slots when it is created: for the push and
//! link-event streams of every [`Client`](crate::Client) that was about 16 KB, paid also by
//! the clients nobody listens to. A message sent while nobody is subscribed reaches no one
//! either way, so the channel can wait for its first receiver.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;

/// The subscribing side, held by the client handles.
#[derive(Debug)]
pub(crate) struct Fanout<T> {
    shared: Arc<Mutex<State<T>>>,
    capacity: usize,
}

/// The sending side, held by the driver. Dropping it closes every receiver.
#[derive(Debug)]
pub(crate) struct Publisher<T> {
    shared: Arc<Mutex<State<T>>>,
    /// The channel once somebody subscribed (so a send takes no lock after that).
    tx: Option<broadcast::Sender<T>>,
}

#[derive(Debug)]
enum State<T> {
    /// Nobody subscribed yet: no channel.
    Unsubscribed,
    Open(broadcast::Sender<T>),
    /// The publisher is gone.
    Closed,
}

/// A channel of `capacity` slots per receiver, created at the first subscription.
pub(crate) fn fanout<T: Clone>(capacity: usize) -> (Fanout<T>, Publisher<T>) {
    let shared = Arc::new(Mutex::new(State::Unsubscribed));
    (
        Fanout {
            shared: shared.clone(),
            capacity,
        },
        Publisher { shared, tx: None },
    )
}

fn lock<T>(shared: &Mutex<State<T>>) -> MutexGuard<'_, State<T>> {
    // The state is replaced whole under the lock: a panic elsewhere leaves it consistent.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

impl<T: Clone> Fanout<T> {
    /// A receiver of what is sent from now on; an already closed one when the publisher is
    /// gone.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<T> {
        let mut state = lock(&self.shared);
        match &*state {
            State::Open(tx) => tx.subscribe(),
            State::Closed => broadcast::channel(1).1,
            State::Unsubscribed => {
                let (tx, rx) = broadcast::channel(self.capacity);
                *state = State::Open(tx);
                rx
            }
        }
    }
}

impl<T> Publisher<T> {
    /// Sends `value` to every current receiver (to none before the first subscription).
    pub(crate) fn send(&mut self, value: T) {
        if self.tx.is_none() {
            match &*lock(&self.shared) {
                State::Open(tx) => self.tx = Some(tx.clone()),
                State::Unsubscribed | State::Closed => return,
            }
        }
        if let Some(tx) = &self.tx {
            let _ = tx.send(value);
        }
    }
}

impl<T> Drop for Publisher<T> {
    fn drop(&mut self) {
        *lock(&self.shared) = State::Closed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::broadcast::error::TryRecvError;

    #[test]
    fn nothing_is_allocated_or_kept_before_the_first_subscription() {
        let (fanout, mut publisher) = fanout::<u32>(4);
        publisher.send(1);
        assert!(matches!(*lock(&fanout.shared), State::Unsubscribed));
        let mut rx = fanout.subscribe();
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        publisher.send(2);
        assert_eq!(rx.try_recv(), Ok(2));
    }

    #[test]
    fn every_receiver_gets_what_is_sent_after_it_subscribed() {
        let (fanout, mut publisher) = fanout::<u32>(4);
        let mut first = fanout.subscribe();
        publisher.send(1);
        let mut second = fanout.subscribe();
        publisher.send(2);
        assert_eq!(first.try_recv(), Ok(1));
        assert_eq!(first.try_recv(), Ok(2));
        assert_eq!(second.try_recv(), Ok(2));
        assert_eq!(second.try_recv(), Err(TryRecvError::Empty));
    }

    #[test]
    fn a_slow_receiver_lags_past_the_capacity() {
        let (fanout, mut publisher) = fanout::<u32>(2);
        let mut rx = fanout.subscribe();
        for v in 0..5 {
            publisher.send(v);
        }
        assert_eq!(rx.try_recv(), Err(TryRecvError::Lagged(3)));
        assert_eq!(rx.try_recv(), Ok(3));
    }

    #[test]
    fn dropping_the_publisher_closes_old_and_new_receivers() {
        let (fanout, mut publisher) = fanout::<u32>(4);
        let mut before = fanout.subscribe();
        publisher.send(1);
        drop(publisher);
        assert_eq!(before.try_recv(), Ok(1));
        assert_eq!(before.try_recv(), Err(TryRecvError::Closed));
        let mut after = fanout.subscribe();
        assert_eq!(after.try_recv(), Err(TryRecvError::Closed));
    }

    #[test]
    fn a_publisher_dropped_unsubscribed_closes_later_receivers() {
        let (fanout, publisher) = fanout::<u32>(4);
        drop(publisher);
        assert_eq!(fanout.subscribe().try_recv(), Err(TryRecvError::Closed));
    }
}

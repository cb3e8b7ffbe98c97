//! A connection's outgoing frames, written by whoever has them first.
//!
//! The room task fans a batch out by [`Outbox::push`]ing each frame to each peer and then
//! [`Outbox::flush`]ing every peer once: when a socket takes the bytes at once (the common case)
//! the room's own `write` delivers them, and no other task wakes. When it does not (the socket is
//! full, or the reader holds the socket's split lock for a moment), the frames wait in the
//! outbox's backlog and the connection's writer task owns the socket until it has written them
//! all; the room only appends to the backlog meanwhile, so frames keep their order.
//!
//! Every poll made on the room's behalf uses a no-op waker and never waits; the writer polls with
//! its own waker, and the room does not touch the socket while the writer owns it, so the
//! writer's registration is never overwritten.
//!
//! The writer polls [`Outbox::drain`] as one branch of its `select!`, never inside another
//! branch's body, so a socket that takes nothing can never keep it from pinging or closing.
//! When the room judges a peer too slow it [`abandon`](Outbox::abandon)s the outbox itself:
//! the backlog is freed at once, whatever the writer is doing.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures::Sink;
use futures::stream::SplitSink;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::metrics::Metrics;
use crate::upgrade::Socket;

type WsSink = SplitSink<Socket, Message>;

/// The peer cannot take more: its backlog is full, or its connection is gone.
#[derive(Debug)]
pub struct Full;

/// Shared by the room task (pushes, flushes) and the connection's writer task (drains).
#[derive(Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the writer task when it has been handed the socket.
    wake: Notify,
    /// Most frames the backlog holds before the peer counts as too slow.
    limit: usize,
    metrics: Arc<Metrics>,
}

struct State {
    /// `None` once the connection is finished.
    sink: Option<WsSink>,
    /// Frames not yet handed to the socket, oldest first.
    backlog: VecDeque<Message>,
    /// The writer task owns the socket (it was handed frames the room could not write).
    writer_owns: bool,
    /// Frames were handed to the socket since its last completed flush.
    unflushed: bool,
    /// The room gave up on this peer: no more frames are queued (see [`Outbox::abandon`]).
    abandoned: bool,
}

impl Outbox {
    pub fn new(sink: WsSink, limit: usize, metrics: Arc<Metrics>) -> Self {
        Outbox {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    sink: Some(sink),
                    backlog: VecDeque::new(),
                    writer_owns: false,
                    unflushed: false,
                    abandoned: false,
                }),
                wake: Notify::new(),
                limit: limit.max(1),
                metrics,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a frame half-handed: recover the state.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a binary frame; nothing is written before [`flush`](Self::flush).
    pub fn push(&self, frame: Bytes) -> Result<(), Full> {
        let mut st = self.state();
        let len = frame.len() as u64;
        let st = &mut *st;
        if st.abandoned {
            return Err(Full);
        }
        let Some(sink) = st.sink.as_mut() else {
            return Err(Full);
        };
        if st.writer_owns || !st.backlog.is_empty() {
            if st.backlog.len() >= self.shared.limit {
                return Err(Full);
            }
            st.backlog.push_back(Message::Binary(frame));
        } else {
            let mut cx = Context::from_waker(Waker::noop());
            match Pin::new(&mut *sink).poll_ready(&mut cx) {
                Poll::Ready(Ok(())) => {
                    if Pin::new(sink).start_send(Message::Binary(frame)).is_err() {
                        return Err(Full);
                    }
                    st.unflushed = true;
                }
                Poll::Ready(Err(_)) => return Err(Full),
                Poll::Pending => st.backlog.push_back(Message::Binary(frame)),
            }
        }
        self.shared.metrics.bytes_out.inc_by(len);
        Ok(())
    }

    /// Writes what [`push`](Self::push) queued if the socket takes it now; otherwise hands the
    /// socket to the writer task. Never waits.
    pub fn flush(&self) {
        let mut st = self.state();
        let st = &mut *st;
        if st.writer_owns {
            return;
        }
        let Some(sink) = st.sink.as_mut() else {
            return;
        };
        let hand_over = if !st.backlog.is_empty() {
            true
        } else if st.unflushed {
            let mut cx = Context::from_waker(Waker::noop());
            match Pin::new(sink).poll_flush(&mut cx) {
                Poll::Ready(Ok(())) => {
                    st.unflushed = false;
                    false
                }
                // The writer finds the error itself and ends the connection.
                Poll::Ready(Err(_)) | Poll::Pending => true,
            }
        } else {
            false
        };
        if hand_over {
            st.writer_owns = true;
            self.shared.wake.notify_one();
        }
    }

    /// Resolves when the writer task has been handed the socket (see [`drain`](Self::drain)).
    pub async fn handed_over(&self) {
        self.shared.wake.notified().await;
    }

    /// Writer task: queues a control or close message behind everything queued and takes the
    /// socket; [`drain`](Self::drain) writes it. Never waits.
    pub fn queue_control(&self, msg: Message) {
        let mut st = self.state();
        st.backlog.push_back(msg);
        st.writer_owns = true;
    }

    /// Room task: the peer is too slow and gets nothing more. Frees the backlog at once (the
    /// writer may be waiting on a socket that takes nothing), refuses later frames, and wakes
    /// the writer. Returns whether this call gave up on a live connection: false if it already
    /// was abandoned, or the connection had ended (a peer that is leaving is not a slow one).
    pub fn abandon(&self) -> bool {
        let mut st = self.state();
        let live = !st.abandoned && st.sink.is_some();
        st.abandoned = true;
        st.backlog.clear();
        st.backlog.shrink_to_fit();
        drop(st);
        self.shared.wake.notify_one();
        live
    }

    /// Writer task: writes the backlog and flushes, waiting for the socket as needed, then gives
    /// the socket back to the room.
    pub async fn drain(&self) -> Result<(), WsError> {
        poll_fn(|cx| self.poll_drain(cx)).await
    }

    fn poll_drain(&self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        let mut st = self.state();
        let st = &mut *st;
        let Some(sink) = st.sink.as_mut() else {
            return Poll::Ready(Err(WsError::AlreadyClosed));
        };
        // Ours until drained, even if woken with nothing to do: a room that polled the socket
        // meanwhile would replace this task's waker with its no-op one.
        st.writer_owns = true;
        loop {
            while !st.backlog.is_empty() {
                std::task::ready!(Pin::new(&mut *sink).poll_ready(cx))?;
                if let Some(msg) = st.backlog.pop_front() {
                    Pin::new(&mut *sink).start_send(msg)?;
                    st.unflushed = true;
                }
            }
            if st.unflushed {
                std::task::ready!(Pin::new(&mut *sink).poll_flush(cx))?;
                st.unflushed = false;
            }
            // Nothing arrived while flushing: the room may write again.
            if st.backlog.is_empty() {
                st.writer_owns = false;
                return Poll::Ready(Ok(()));
            }
        }
    }

    /// Writer task: sends a close handshake's first frame and closes the sink.
    pub async fn close(&self) -> Result<(), WsError> {
        poll_fn(|cx| {
            let mut st = self.state();
            st.writer_owns = true;
            match st.sink.as_mut() {
                Some(sink) => Pin::new(sink).poll_close(cx),
                None => Poll::Ready(Ok(())),
            }
        })
        .await
    }

    /// Writer task, at the end: the peer takes no more frames, and the socket is released.
    pub fn finish(&self) {
        let mut st = self.state();
        st.sink = None;
        st.backlog.clear();
    }
}

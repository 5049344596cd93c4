package apify

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// The platform events of an Actor run, as Consume acts on them: migrating
// and aborting stop it within the time the platform leaves; persistState
// calls OnPersistState.

const (
	// consumeAbortGrace is how long the platform leaves a gracefully aborted
	// run before it force-stops it.
	consumeAbortGrace = 30 * time.Second
	// consumeMigratingUnknown is the time assumed left when a migrating
	// event does not say (the platform always does).
	consumeMigratingUnknown = 5 * time.Second
)

// eventStop is a platform event that stops the consumer.
type eventStop struct {
	name      string
	err       error         // ErrMigrating or ErrAborting, wrapped
	at        time.Time     // when Consume read it
	remaining time.Duration // until the platform kills the process
}

// end is when the shutdown must be over: the time remaining, less a safety
// margin of a tenth of it, at least 200 ms and at most 2 s.
func (e *eventStop) end() time.Time {
	return e.at.Add(e.remaining - min(max(e.remaining/10, 200*time.Millisecond), 2*time.Second))
}

// eventWatcher reads a subscription for the consumer.
type eventWatcher struct {
	c          *consumer
	events     *PlatformEvents
	own        bool // subscribed by Consume: closed at its end
	done       chan struct{}
	wg         sync.WaitGroup
	persisting atomic.Bool
}

// watchEvents starts reading the platform's events: the Events option, or
// a subscription of Consume's own inside an Actor run. stop ends the
// reading and waits (at most ShutdownTimeout for an OnPersistState call).
func (c *consumer) watchEvents(ctx context.Context) (stop func(), err error) {
	events, own := c.o.Events, false
	if events == nil && !c.o.IgnorePlatformEvents {
		// Outside an Actor run (no events URL) this is a stream that never
		// delivers, at no cost. The first dial is bounded: Consume goes on
		// without events rather than wait for an events server that hangs.
		sctx, cancel := context.WithTimeout(ctx, c.o.ShutdownTimeout)
		events, err = SubscribePlatformEvents(sctx, PlatformEventsOptions{Logger: c.o.Logger})
		cancel()
		switch {
		case errors.Is(err, ErrInvalidInput):
			return nil, fmt.Errorf("%w (set ConsumeOptions.IgnorePlatformEvents to consume without them)", err)
		case err != nil && ctx.Err() != nil:
			return nil, ctx.Err()
		case err != nil:
			c.log.Error("apify: Consume: could not subscribe to the platform's events; going on without them", "queue", c.queue, "error", err)
			return func() {}, nil
		}
		own = true
	}
	if events == nil {
		return func() {}, nil
	}
	w := &eventWatcher{c: c, events: events, own: own, done: make(chan struct{})}
	w.wg.Add(1)
	go func() { defer w.wg.Done(); w.read(ctx) }()
	return w.stop, nil
}

func (w *eventWatcher) read(ctx context.Context) {
	for {
		select {
		case <-w.done:
			return
		case ev, ok := <-w.events.C():
			if !ok {
				return // closed by its owner
			}
			w.act(ctx, ev)
		}
	}
}

func (w *eventWatcher) act(ctx context.Context, ev PlatformEvent) {
	c := w.c
	switch ev.Name {
	case PlatformEventMigrating:
		remaining := ev.TimeRemaining
		if remaining <= 0 {
			remaining = consumeMigratingUnknown
		}
		c.stopForEvent(&eventStop{name: ev.Name, err: fmt.Errorf("apify: Consume stopped: %w (%v left before the process is killed)", ErrMigrating, remaining), at: time.Now(), remaining: remaining})
	case PlatformEventAborting:
		c.stopForEvent(&eventStop{name: ev.Name, err: fmt.Errorf("apify: Consume stopped: %w (the platform force-stops it about %v later)", ErrAborting, consumeAbortGrace), at: time.Now(), remaining: consumeAbortGrace})
	case PlatformEventPersistState:
		w.persist(ctx, ev.IsMigrating)
	}
}

// persist calls OnPersistState in a goroutine, one call at a time.
func (w *eventWatcher) persist(ctx context.Context, isMigrating bool) {
	c := w.c
	if c.o.OnPersistState == nil {
		return
	}
	if !w.persisting.CompareAndSwap(false, true) {
		c.log.Warn("apify: Consume: persistState skipped: the previous OnPersistState call still runs", "queue", c.queue)
		return
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		defer w.persisting.Store(false)
		defer func() {
			if p := recover(); p != nil {
				c.log.Error("apify: Consume: OnPersistState panicked", "queue", c.queue, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			}
		}()
		c.o.OnPersistState(context.WithoutCancel(ctx), isMigrating)
	}()
}

func (w *eventWatcher) stop() {
	close(w.done)
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	wait := w.c.o.ShutdownTimeout
	if e := w.c.event.Load(); e != nil {
		wait = min(wait, max(time.Until(e.end()), 0)) // the caller must act on the event in time
	}
	if !waitFor(done, wait) {
		w.c.log.Warn("apify: Consume: returning while OnPersistState still runs", "queue", w.c.queue)
	}
	if w.own {
		_ = w.events.Close()
	}
}

// stopForEvent stops the consumer for a platform event; one that comes
// during a shutdown already under way shortens it (see shutdownPlan).
func (c *consumer) stopForEvent(e *eventStop) {
	if c.queueDone.Load() {
		return // the queue is done: Consume is returning nil anyway, at once
	}
	if !c.event.CompareAndSwap(nil, e) {
		return // the first event decides
	}
	c.log.Warn("apify: Consume: the platform is stopping the run: releasing every lock before it does",
		"queue", c.queue, "event", e.name, "timeRemaining", e.remaining)
	c.stopTaking()
	wake(c.replan)
}

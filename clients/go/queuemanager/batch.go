package queuemanager

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// BatchHandler runs a batch of jobs in one call (one INSERT of many rows, one API call of many messages). It
// returns nil (every job completes with no result) or one entry per job, in the order given: an entry that
// is an error fails its job, any other completes it with that result. An error returned fails every job of
// the batch. Its ctx ends when every run of the batch has ended (cancelled, timed out, shut down).
type BatchHandler func(ctx context.Context, jobs []*Job) ([]any, error)

// BatchOptions shape the batches of Batch.
type BatchOptions struct {
	// Size is the most jobs per batch, 1 to 100,000; a batch leaves as soon as it has them.
	Size int
	// Wait is how long a batch waits for more jobs after its first one came (default 1 s, at most 1 h).
	Wait time.Duration
	// Key puts jobs of different keys into different batches (by name, tenant…); nil: one batch at a time.
	Key func(job *Job) string
}

type batchAnswer struct {
	result any
	err    error
}

type batchWaiter struct {
	job    *Job
	answer chan batchAnswer
	gone   bool
}

type openBatch struct {
	waiters []*batchWaiter
	timer   *time.Timer
	running bool
	left    int
	cancel  context.CancelFunc
	ctx     context.Context
}

// Batch makes a Handler that runs handler once per batch of up to opts.Size jobs (BullMQ Pro's batches,
// Celery's Batches; the Python client's queue_manager.batch). Each job is still its own run on the worker
// stream, with its own lease, timeout, cancel and outcome: the handler parks each run until its batch is full
// or its first job has waited opts.Wait. A run whose ctx ends while its batch fills leaves the batch; one
// whose ctx ends while the handler runs stops waiting for it. Give the worker a concurrency of at least
// opts.Size, else batches leave at opts.Wait with what came.
func Batch(handler BatchHandler, opts BatchOptions) (Handler, error) {
	if handler == nil {
		return nil, fmt.Errorf("batch handler is nil")
	}
	if opts.Size < 1 || opts.Size > 100_000 {
		return nil, fmt.Errorf("batch size must be 1 to 100000, got %d", opts.Size)
	}
	if opts.Wait == 0 {
		opts.Wait = time.Second
	}
	if opts.Wait < 0 || opts.Wait > time.Hour {
		return nil, fmt.Errorf("batch wait must be more than 0 and at most 1h, got %s", opts.Wait)
	}
	var mu sync.Mutex
	open := map[string]*openBatch{}

	run := func(b *openBatch) {
		defer b.cancel()
		jobs := make([]*Job, len(b.waiters))
		for i, w := range b.waiters {
			jobs[i] = w.job
		}
		results, err := handler(b.ctx, jobs)
		if err == nil && results != nil && len(results) != len(jobs) {
			err = fmt.Errorf("a batch handler must return nil or one result per job: %d jobs, got %d entries",
				len(jobs), len(results))
		}
		for i, w := range b.waiters {
			switch {
			case err != nil:
				w.answer <- batchAnswer{err: err}
			case results == nil:
				w.answer <- batchAnswer{}
			default:
				if e, ok := results[i].(error); ok {
					w.answer <- batchAnswer{err: e}
				} else {
					w.answer <- batchAnswer{result: results[i]}
				}
			}
		}
	}
	// leave hands a full or timed-out batch to the handler. Called with mu held.
	leave := func(key string, b *openBatch) {
		if open[key] == b {
			delete(open, key)
		}
		b.timer.Stop()
		if b.running || len(b.waiters) == 0 {
			return
		}
		b.running = true
		b.left = len(b.waiters)
		go run(b)
	}

	return func(ctx context.Context, job *Job) (any, error) {
		key := ""
		if opts.Key != nil {
			key = opts.Key(job)
		}
		w := &batchWaiter{job: job, answer: make(chan batchAnswer, 1)}
		mu.Lock()
		b := open[key]
		if b == nil {
			b = &openBatch{}
			b.ctx, b.cancel = context.WithCancel(context.Background())
			fresh := b
			b.timer = time.AfterFunc(opts.Wait, func() {
				mu.Lock()
				defer mu.Unlock()
				leave(key, fresh)
			})
			open[key] = b
		}
		b.waiters = append(b.waiters, w)
		if len(b.waiters) >= opts.Size {
			leave(key, b)
		}
		mu.Unlock()
		select {
		case a := <-w.answer:
			return a.result, a.err
		case <-ctx.Done():
			mu.Lock()
			defer mu.Unlock()
			if !b.running {
				for i, other := range b.waiters {
					if other == w {
						b.waiters = append(b.waiters[:i], b.waiters[i+1:]...)
						break
					}
				}
				if len(b.waiters) == 0 {
					b.timer.Stop()
					b.cancel()
					if open[key] == b {
						delete(open, key)
					}
				}
			} else if !w.gone {
				w.gone = true
				b.left--
				if b.left == 0 {
					b.cancel()
				}
			}
			return nil, context.Cause(ctx)
		}
	}, nil
}

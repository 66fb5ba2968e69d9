package queuemanager_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	qm "github.com/queue-manager/queue-manager/clients/go/queuemanager"
)

// matching lists every job of the state that matches, following the tokens to the end (two jobs a page, so
// that the listing spans pages).
func matching(t *testing.T, c *qm.Client, queue string, state qm.JobState, filter qm.JobFilter) []*qm.Job {
	t.Helper()
	var jobs []*qm.Job
	token := ""
	for calls := 0; ; calls++ {
		page, err := c.ListJobsMatching(testContext(t), queue, state, filter, 2, token)
		if err != nil || len(page.Jobs) > 2 || calls > 20 {
			t.Fatalf("ListJobsMatching(%+v) call %d: %v %+v", filter, calls, err, page)
		}
		jobs, token = append(jobs, page.Jobs...), page.NextPageToken
		if token == "" {
			return jobs
		}
	}
}

func ids(jobs []*qm.Job) []string {
	out := make([]string, 0, len(jobs))
	for _, job := range jobs {
		out = append(out, job.ID)
	}
	slices.Sort(out)
	return out
}

// bulk runs one bulk action to the end (until the token comes back empty) and sums its counts.
func bulk(t *testing.T, what string, call func(qm.BulkOptions) (*qm.BulkActionResult, error), opts qm.BulkOptions) (
	total qm.BulkActionResult,
) {
	t.Helper()
	for calls := 0; ; calls++ {
		result, err := call(opts)
		if err != nil || calls > 20 || (opts.Limit > 0 && result.Count+result.Requested > opts.Limit) {
			t.Fatalf("%s call %d (%+v): %v %+v", what, calls, opts, err, result)
		}
		total.Count += result.Count
		total.Requested += result.Requested
		if opts.PageToken = result.NextPageToken; opts.PageToken == "" {
			return total
		}
	}
}

func TestListJobsMatchingFilters(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	var emails []*qm.Job
	for range 3 {
		emails = append(emails, add(t, c, queue, "send-email", nil, &qm.JobOptions{Group: "acme"}))
	}
	sms := add(t, c, queue, "send-sms", nil, &qm.JobOptions{
		Metadata: &qm.Metadata{Tags: []string{"vip", "eu"}, CorrelationID: "req-7"},
	})
	report := add(t, c, queue, "report", nil, nil)
	all := append(slices.Clone(emails), sms, report)

	cases := []struct {
		filter qm.JobFilter
		want   []*qm.Job
	}{
		{qm.JobFilter{}, all},
		{qm.JobFilter{Name: "send-*"}, append(slices.Clone(emails), sms)},
		{qm.JobFilter{Name: "send-email"}, emails},
		{qm.JobFilter{Name: "send"}, nil},
		{qm.JobFilter{Group: "acme"}, emails},
		{qm.JobFilter{Tag: "vip"}, []*qm.Job{sms}},
		{qm.JobFilter{CorrelationID: "req-7"}, []*qm.Job{sms}},
		{qm.JobFilter{Name: "send-*", Tag: "eu"}, []*qm.Job{sms}},
		{qm.JobFilter{Group: "acme", Tag: "vip"}, nil},
		{qm.JobFilter{CreatedAfter: emails[0].CreateTime, CreatedBefore: report.CreateTime.Add(time.Millisecond)}, all},
		{qm.JobFilter{CreatedAfter: report.CreateTime.Add(time.Millisecond)}, nil},
		{qm.JobFilter{CreatedBefore: emails[0].CreateTime}, nil},
	}
	for _, tc := range cases {
		if got, want := ids(matching(t, c, queue, qm.StateWaiting, tc.filter)), ids(tc.want); !slices.Equal(got, want) {
			t.Errorf("ListJobsMatching(%+v): got %v, want %v", tc.filter, got, want)
		}
	}
	page, err := c.ListJobsMatching(testContext(t), queue, qm.StateWaiting, qm.JobFilter{Tag: "vip"}, 0, "")
	if err != nil || page.Total != len(all) {
		t.Fatalf("Total must stay the number of jobs in the state, matching or not: %v %+v", err, page)
	}
	if _, err := c.ListJobsMatching(testContext(t), queue, qm.StateWaiting, qm.JobFilter{}, 2, "bogus"); !errors.Is(
		err, qm.ErrInvalidArgument) {
		t.Fatalf("a token of no call: want ErrInvalidArgument, got %v", err)
	}
}

func TestBulkActionsActOnWhatMatches(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	var acme []*qm.Job
	for range 5 {
		acme = append(acme, add(t, c, queue, "send-email", nil, &qm.JobOptions{Group: "acme", Delay: time.Hour}))
	}
	vip := add(t, c, queue, "send-sms", nil, &qm.JobOptions{
		Delay: time.Hour, Metadata: &qm.Metadata{Tags: []string{"vip"}},
	})
	ctx := testContext(t)

	cancel := func(state qm.JobState, reason string) func(qm.BulkOptions) (*qm.BulkActionResult, error) {
		return func(o qm.BulkOptions) (*qm.BulkActionResult, error) {
			return c.CancelJobs(ctx, queue, state, reason, o)
		}
	}
	remove := func(state qm.JobState) func(qm.BulkOptions) (*qm.BulkActionResult, error) {
		return func(o qm.BulkOptions) (*qm.BulkActionResult, error) { return c.RemoveJobs(ctx, queue, state, o) }
	}
	retry := func(state qm.JobState) func(qm.BulkOptions) (*qm.BulkActionResult, error) {
		return func(o qm.BulkOptions) (*qm.BulkActionResult, error) { return c.RetryJobs(ctx, queue, state, o) }
	}

	// Two at a time: three calls at least, each within its limit, the last with an empty token.
	got := bulk(t, "CancelJobs", cancel(qm.StateDelayed, "tenant left"), qm.BulkOptions{
		Filter: qm.JobFilter{Group: "acme"}, Limit: 2,
	})
	if got.Count != 5 || got.Requested != 0 {
		t.Fatalf("CancelJobs must cancel the five jobs of group acme: %+v", got)
	}
	if job, err := c.GetJob(ctx, queue, acme[0].ID); err != nil || job.State != qm.StateCancelled ||
		job.CancelReason != "tenant left" {
		t.Fatalf("a cancelled job keeps the reason: %v %+v", err, job)
	}
	if job, err := c.GetJob(ctx, queue, vip.ID); err != nil || job.State != qm.StateDelayed {
		t.Fatalf("a job of no group must be left alone: %v %+v", err, job)
	}

	// The vip job cancelled too, then run again by tag: the acme jobs stay cancelled.
	if _, err := c.CancelJob(ctx, queue, vip.ID, ""); err != nil {
		t.Fatal(err)
	}
	byTag := qm.BulkOptions{Filter: qm.JobFilter{Tag: "vip"}}
	if got := bulk(t, "RetryJobs", retry(qm.StateCancelled), byTag); got.Count != 1 {
		t.Fatalf("RetryJobs must run the vip job again: %+v", got)
	}
	if job, err := c.GetJob(ctx, queue, vip.ID); err != nil || job.State != qm.StateWaiting {
		t.Fatalf("the retried job must be waiting: %v %+v", err, job)
	}
	if got := bulk(t, "RetryJobs", retry(0), qm.BulkOptions{}); got.Count != 0 {
		t.Fatalf("RetryJobs of failed jobs: the queue has none: %+v", got)
	}

	if got := bulk(t, "RemoveJobs", remove(qm.StateCancelled), qm.BulkOptions{
		Filter: qm.JobFilter{Name: "send-*"},
	}); got.Count != 5 {
		t.Fatalf("RemoveJobs must remove the five cancelled jobs: %+v", got)
	}
	if _, err := c.GetJob(ctx, queue, acme[4].ID); !errors.Is(err, qm.ErrNotFound) {
		t.Fatalf("a removed job is gone: want ErrNotFound, got %v", err)
	}

	// An active job is asked to stop: Requested, not Count; it ends cancelled once its handler returns.
	started := make(chan string, 1)
	startWorker(t, c, qm.WorkerConfig{Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			if job.Name != "long" {
				return nil, nil
			}
			started <- job.ID
			<-ctx.Done()
			return nil, ctx.Err()
		},
	}})
	long := add(t, c, queue, "long", nil, nil)
	receive(t, started, "the long job to start")
	got = bulk(t, "CancelJobs", cancel(qm.StateActive, "stop"), qm.BulkOptions{Filter: qm.JobFilter{Name: "long"}})
	if got.Count != 0 || got.Requested != 1 {
		t.Fatalf("CancelJobs of an active job must ask its worker to stop it: %+v", got)
	}
	if done := waitFinished(t, c, queue, long.ID); done.State != qm.StateCancelled {
		t.Fatalf("the active job must end cancelled: %+v", done)
	}

	_, err := c.RemoveJobs(ctx, queue, qm.StateActive, qm.BulkOptions{})
	if !errors.Is(err, qm.ErrInvalidArgument) {
		t.Fatalf("RemoveJobs of active jobs: want ErrInvalidArgument, got %v", err)
	}
	_, err = c.CancelJobs(ctx, queue, qm.StateCompleted, "", qm.BulkOptions{})
	if !errors.Is(err, qm.ErrInvalidArgument) {
		t.Fatalf("CancelJobs of finished jobs: want ErrInvalidArgument, got %v", err)
	}
	_, err = c.CancelJobs(ctx, queue+"-missing", qm.StateWaiting, "", qm.BulkOptions{})
	if !errors.Is(err, qm.ErrNotFound) {
		t.Fatalf("CancelJobs of an unknown queue: want ErrNotFound, got %v", err)
	}
}

func TestBadFiltersAreRefusedBeforeTheCall(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx := testContext(t)
	// The queue does not exist: a request that reached the server would fail with its *qm.Error.
	const queue = "go-no-such-queue"
	now := time.Now()
	refused := func(what string, err error, hint string) {
		t.Helper()
		var fromServer *qm.Error
		if err == nil || errors.As(err, &fromServer) || !strings.Contains(err.Error(), hint) {
			t.Errorf("%s: want a refusal before the call mentioning %q, got %v", what, hint, err)
		}
	}
	for _, tc := range []struct {
		filter qm.JobFilter
		hint   string
	}{
		{qm.JobFilter{Name: "send-*-email"}, "'*' may only end a name"},
		{qm.JobFilter{Name: "*send"}, "'*' may only end a name"},
		{qm.JobFilter{Name: "*"}, "leave it empty"},
		{qm.JobFilter{Tag: "  "}, "JobFilter.Tag is blank"},
		{qm.JobFilter{CorrelationID: "\t"}, "JobFilter.CorrelationID is blank"},
		{qm.JobFilter{Group: " "}, "JobFilter.Group is blank"},
		{qm.JobFilter{Group: "a\nb"}, "control characters"},
		{qm.JobFilter{Name: "\xff"}, "not valid UTF-8"},
		{qm.JobFilter{CreatedAfter: now, CreatedBefore: now}, "is not before"},
		{qm.JobFilter{CreatedAfter: now, CreatedBefore: now.Add(-time.Hour)}, "is not before"},
	} {
		_, err := c.ListJobsMatching(ctx, queue, qm.StateWaiting, tc.filter, 0, "")
		refused("ListJobsMatching", err, tc.hint)
		_, err = c.RemoveJobs(ctx, queue, qm.StateFailed, qm.BulkOptions{Filter: tc.filter})
		refused("RemoveJobs", err, tc.hint)
	}
	_, err := c.CancelJobs(ctx, queue, qm.StateWaiting, "", qm.BulkOptions{Limit: qm.MaxBulkLimit + 1})
	refused("CancelJobs with a limit over 1000", err, "BulkOptions.Limit")
	_, err = c.RetryJobs(ctx, queue, qm.StateFailed, qm.BulkOptions{Limit: -1})
	refused("RetryJobs with a negative limit", err, "BulkOptions.Limit")
	_, err = c.RetryJobs(ctx, queue, qm.StateWaiting, qm.BulkOptions{})
	refused("RetryJobs of waiting jobs", err, "StateFailed or StateCancelled")
}

func TestRetryJobsIsBoundedWithoutAFilter(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	ctx := testContext(t)
	jobs := make([]qm.NewJob, qm.MaxBulkLimit+1)
	for i := range jobs {
		jobs[i] = qm.NewJob{Name: "later", Options: &qm.JobOptions{Delay: time.Hour}}
	}
	if _, err := c.AddBulk(ctx, queue, jobs); err != nil {
		t.Fatal(err)
	}
	cancelled := bulk(t, "CancelJobs", func(o qm.BulkOptions) (*qm.BulkActionResult, error) {
		return c.CancelJobs(ctx, queue, qm.StateDelayed, "", o)
	}, qm.BulkOptions{})
	if cancelled.Count != len(jobs) {
		t.Fatalf("CancelJobs must cancel all %d jobs: %+v", len(jobs), cancelled)
	}
	// No filter, limit or token: still one bounded call (RetryFailedJobs is the one that runs them all).
	first, err := c.RetryJobs(ctx, queue, qm.StateCancelled, qm.BulkOptions{})
	if err != nil || first.Count != qm.MaxBulkLimit || first.NextPageToken == "" {
		t.Fatalf("RetryJobs must retry %d jobs and answer a token: %v %+v", qm.MaxBulkLimit, err, first)
	}
	rest, err := c.RetryJobs(ctx, queue, qm.StateCancelled, qm.BulkOptions{PageToken: first.NextPageToken})
	if err != nil || rest.Count != 1 || rest.NextPageToken != "" {
		t.Fatalf("the second call must retry the last job and end: %v %+v", err, rest)
	}
}

// CountJobs counts on the server, following the tokens (a filtered call reads at most scanBudget jobs), and
// stops after MaxCalls with the token to go on from.
func TestCountJobsFollowsTheTokens(t *testing.T) {
	t.Parallel()
	const scanBudget = 4000 // the server's engine/search.py SCAN_BUDGET
	c := newClient(t)
	queue := newQueue(t, c, nil)
	jobs := make([]qm.NewJob, scanBudget+10)
	for i := range jobs {
		jobs[i] = qm.NewJob{Name: "x"}
	}
	jobs[0].Name = "send-email"
	if _, err := c.AddBulk(testContext(t), queue, jobs); err != nil {
		t.Fatalf("AddBulk: %v", err)
	}
	whole, err := c.CountJobs(testContext(t), queue, qm.StateWaiting, qm.JobFilter{Name: "x"}, qm.CountOptions{})
	if err != nil || whole.Count != scanBudget+9 || whole.Calls != 2 || !whole.Complete() {
		t.Fatalf("CountJobs to the end: %v %+v", err, whole)
	}
	part, err := c.CountJobs(testContext(t), queue, qm.StateWaiting, qm.JobFilter{Name: "x"}, qm.CountOptions{MaxCalls: 1})
	if err != nil || part.Count >= scanBudget+9 || part.Calls != 1 || part.Complete() {
		t.Fatalf("CountJobs with MaxCalls 1: %v %+v", err, part)
	}
	rest, err := c.CountJobs(testContext(t), queue, qm.StateWaiting, qm.JobFilter{Name: "x"},
		qm.CountOptions{PageToken: part.NextPageToken})
	if err != nil || part.Count+rest.Count != scanBudget+9 || !rest.Complete() {
		t.Fatalf("CountJobs from the token: %v %+v (after %+v)", err, rest, part)
	}
	one, err := c.CountJobs(testContext(t), queue, qm.StateWaiting, qm.JobFilter{Name: "send-*"}, qm.CountOptions{})
	if err != nil || one.Count != 1 {
		t.Fatalf("CountJobs(send-*): %v %+v", err, one)
	}
	all, err := c.CountJobs(testContext(t), queue, qm.StateWaiting, qm.JobFilter{}, qm.CountOptions{})
	if err != nil || all.Count != scanBudget+10 || all.Calls != 1 {
		t.Fatalf("CountJobs without a filter: %v %+v", err, all)
	}
	if _, err := c.CountJobs(testContext(t), queue, qm.StateWaiting, qm.JobFilter{}, qm.CountOptions{MaxCalls: -1}); err == nil ||
		!strings.Contains(err.Error(), "MaxCalls must be at least 1") {
		t.Fatalf("MaxCalls -1: %v", err)
	}
	if _, err := c.CountJobs(testContext(t), queue, qm.StateWaiting, qm.JobFilter{Name: "a*b"}, qm.CountOptions{}); err == nil ||
		!strings.Contains(err.Error(), "may only end a name") {
		t.Fatalf("a bad filter: %v", err)
	}
	_, err = c.CountJobs(testContext(t), queue, qm.StateWaiting, qm.JobFilter{Name: "x"}, qm.CountOptions{PageToken: "not-a-token"})
	if !errors.Is(err, qm.ErrInvalidArgument) {
		t.Fatalf("a bad token: want ErrInvalidArgument, got %v", err)
	}
}

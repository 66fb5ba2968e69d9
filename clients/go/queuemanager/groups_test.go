package queuemanager_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	qm "github.com/queue-manager/queue-manager/clients/go/queuemanager"
)

func TestGroupsTakeTurns(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	// A flood of one group first (on the bulk stream), then a few jobs of another, then one without a group.
	flood := make([]qm.NewJob, 5)
	for i := range flood {
		flood[i] = qm.NewJob{Name: fmt.Sprintf("a%d", i), Options: &qm.JobOptions{Group: "a"}}
	}
	if _, err := c.AddBulk(testContext(t), queue, flood); err != nil {
		t.Fatalf("AddBulk: %v", err)
	}
	for i := range 2 {
		add(t, c, queue, fmt.Sprintf("b%d", i), nil, &qm.JobOptions{Group: "b"})
	}
	add(t, c, queue, "plain", nil, nil)
	runs := make(chan string, 8)
	startWorker(t, c, qm.WorkerConfig{Concurrency: 1, Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			runs <- job.Name + "/" + job.Group // the handler sees each job's group
			return nil, nil
		},
	}})
	var got []string
	for range 8 {
		got = append(got, receive(t, runs, "the next run"))
	}
	// The job without a group first, then the groups in turns, one job each, until b runs out.
	want := "plain/ a0/a b0/b a1/a b1/b a2/a a3/a a4/a"
	if strings.Join(got, " ") != want {
		t.Fatalf("runs in order %v, want %s", got, want)
	}
}

func TestGroupConcurrencyLimitHoldsAGroupsRuns(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx := testContext(t)
	limits := qm.GroupLimits{Concurrency: 2}
	queue := newQueue(t, c, &qm.QueueConfig{GroupLimits: &limits})
	var ids []string
	for i := range 5 {
		ids = append(ids, add(t, c, queue, fmt.Sprintf("a%d", i), nil, &qm.JobOptions{Group: "a"}).ID)
	}
	for i := range 2 {
		ids = append(ids, add(t, c, queue, fmt.Sprintf("b%d", i), nil, &qm.JobOptions{Group: "b"}).ID)
	}
	// Each run holds its slot until its group's gate lets one run end; the worker has slots to spare.
	gates := map[string]chan struct{}{"a": make(chan struct{}, 5), "b": make(chan struct{}, 2)}
	started := make(chan string, 7)
	var mu sync.Mutex
	running, most := map[string]int{}, map[string]int{}
	startWorker(t, c, qm.WorkerConfig{Concurrency: 6, Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			mu.Lock()
			running[job.Group]++
			most[job.Group] = max(most[job.Group], running[job.Group])
			mu.Unlock()
			defer func() {
				mu.Lock()
				running[job.Group]--
				mu.Unlock()
			}()
			started <- job.Group
			select {
			case <-gates[job.Group]:
				return nil, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		},
	}})
	var first []string
	for range 4 {
		first = append(first, receive(t, started, "the first runs"))
	}
	slices.Sort(first)
	if strings.Join(first, " ") != "a a b b" {
		t.Fatalf("the first runs are two of each group, got %v", first)
	}
	// Two of a's jobs run, three wait, though the worker could take two more: the limit holds them back.
	page, err := c.ListGroups(ctx, queue, 0, "")
	if err != nil || page.Total != 2 || len(page.Groups) != 2 {
		t.Fatalf("ListGroups: %v %+v", err, page)
	}
	a, b := *page.Groups[0], *page.Groups[1]
	if a.Group != "a" || a.Waiting != 3 || a.Active != 2 || a.Limits != limits || a.CustomLimits ||
		b.Group != "b" || b.Waiting != 0 || b.Active != 2 {
		t.Fatalf("groups while held: %+v %+v", a, b)
	}
	// One of a's runs ends: the next of a's jobs takes its slot.
	gates["a"] <- struct{}{}
	if next := receive(t, started, "a's next run"); next != "a" {
		t.Fatalf("the run after one of a's ended is of group %q", next)
	}
	// A limit of a's own, raised while its runs are held: one more of a's jobs starts at once.
	mu.Lock()
	mostBefore := most["a"]
	mu.Unlock()
	raised, err := c.SetGroupLimits(ctx, queue, "a", qm.GroupLimits{Concurrency: 3})
	if err != nil || !raised.CustomLimits || raised.Active != 2 || raised.Waiting != 2 {
		t.Fatalf("SetGroupLimits(a): %v %+v", err, raised)
	}
	if next := receive(t, started, "a's run under its raised limit"); next != "a" {
		t.Fatalf("the run after a's limit was raised is of group %q", next)
	}
	for range 4 {
		gates["a"] <- struct{}{}
	}
	for range 2 {
		gates["b"] <- struct{}{}
	}
	receive(t, started, "a's last run")
	for _, id := range ids {
		if job := waitFinished(t, c, queue, id); job.State != qm.StateCompleted {
			t.Fatalf("job %s ended %s", job.Name, job.State)
		}
	}
	// A group with nothing left is forgotten, unless it has limits of its own.
	page, err = c.ListGroups(ctx, queue, 0, "")
	if err != nil || page.Total != 1 || page.Groups[0].Group != "a" || page.Groups[0].Waiting != 0 ||
		page.Groups[0].Active != 0 {
		t.Fatalf("ListGroups once every job is done: %v %+v", err, page)
	}
	mu.Lock()
	defer mu.Unlock()
	if mostBefore != 2 || most["b"] != 2 || most["a"] != 3 {
		t.Fatalf("the most runs of a group at once must be its limit: 2, and 3 once a's was raised; got %d, then %v",
			mostBefore, most)
	}
}

func TestListGroupsAndSetGroupLimitsRoundTrip(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx := testContext(t)
	limits := qm.GroupLimits{Concurrency: 3, RateLimit: &qm.RateLimit{Max: 5, Duration: time.Second}}
	queue := newQueue(t, c, &qm.QueueConfig{GroupLimits: &limits})
	got, err := c.GetQueue(ctx, queue)
	if err != nil || got.GroupLimits == nil || *got.GroupLimits.RateLimit != *limits.RateLimit ||
		got.GroupLimits.Concurrency != 3 {
		t.Fatalf("GetQueue must read the group limits back: %v %+v", err, got)
	}
	const tenant = "tenant/1 é"
	for _, group := range []string{"b", tenant, "a", "c"} {
		job := add(t, c, queue, "j", nil, &qm.JobOptions{Group: group})
		stored, err := c.GetJob(ctx, queue, job.ID)
		if job.Group != group || err != nil || stored.Group != group {
			t.Fatalf("the job's group must read back: %q, then %v %+v", job.Group, err, stored)
		}
	}
	add(t, c, queue, "no group", nil, nil)

	// Two pages of two, by name; the queue's limits apply to every group.
	first, err := c.ListGroups(ctx, queue, 2, "")
	if err != nil || first.Total != 4 || first.NextPageToken == "" || len(first.Groups) != 2 {
		t.Fatalf("ListGroups, first page: %v %+v", err, first)
	}
	second, err := c.ListGroups(ctx, queue, 2, first.NextPageToken)
	if err != nil || second.Total != 4 || second.NextPageToken != "" || len(second.Groups) != 2 {
		t.Fatalf("ListGroups, second page: %v %+v", err, second)
	}
	var names []string
	for _, g := range append(first.Groups, second.Groups...) {
		names = append(names, g.Group)
		if g.Waiting != 1 || g.Active != 0 || g.CustomLimits || g.Limits.Concurrency != 3 ||
			*g.Limits.RateLimit != *limits.RateLimit {
			t.Fatalf("group %+v", g)
		}
	}
	if !slices.Equal(names, []string{"a", "b", "c", tenant}) {
		t.Fatalf("groups listed %v, want them by name", names)
	}

	// A group's own limits replace the queue's; the zero GroupLimits lifts them all.
	own, err := c.SetGroupLimits(ctx, queue, "b", qm.GroupLimits{Concurrency: 7})
	if err != nil || own.Group != "b" || !own.CustomLimits || own.Limits != (qm.GroupLimits{Concurrency: 7}) ||
		own.Waiting != 1 {
		t.Fatalf("SetGroupLimits(b): %v %+v", err, own)
	}
	idle, err := c.SetGroupLimits(ctx, queue, "idle", qm.GroupLimits{})
	if err != nil || !idle.CustomLimits || idle.Limits != (qm.GroupLimits{}) || idle.Waiting != 0 {
		t.Fatalf("SetGroupLimits(idle): %v %+v", err, idle)
	}
	// A group with limits of its own is known while it has no jobs.
	page, err := c.ListGroups(ctx, queue, 0, "")
	if err != nil || page.Total != 5 || page.Groups[1].Group != "b" || !page.Groups[1].CustomLimits ||
		page.Groups[3].Group != "idle" || !page.Groups[3].CustomLimits || page.Groups[0].CustomLimits {
		t.Fatalf("ListGroups after SetGroupLimits: %v %+v", err, page)
	}
	metrics, err := c.GetQueueMetrics(ctx, queue)
	if err != nil || metrics.Groups != 5 || metrics.Waiting != 5 {
		t.Fatalf("GetQueueMetrics must count the groups: %v %+v", err, metrics)
	}

	// Cleared, the queue's limits apply again, and an idle group is forgotten.
	cleared, err := c.ClearGroupLimits(ctx, queue, "idle")
	if err != nil || cleared.CustomLimits || cleared.Limits.Concurrency != 3 || cleared.Limits.RateLimit == nil {
		t.Fatalf("ClearGroupLimits(idle): %v %+v", err, cleared)
	}
	cleared, err = c.ClearGroupLimits(ctx, queue, "b")
	if err != nil || cleared.CustomLimits || cleared.Limits.Concurrency != 3 || cleared.Waiting != 1 {
		t.Fatalf("ClearGroupLimits(b): %v %+v", err, cleared)
	}
	if page, err = c.ListGroups(ctx, queue, 0, ""); err != nil || page.Total != 4 {
		t.Fatalf("ListGroups after ClearGroupLimits: %v %+v", err, page)
	}

	// A schedule's job template keeps its group.
	schedule := &qm.Schedule{
		ID: "nightly", Queue: queue, Cron: "0 3 * * *", JobName: "report", JobOptions: &qm.JobOptions{Group: tenant},
	}
	if stored, _, err := c.UpsertSchedule(ctx, schedule); err != nil || stored.JobOptions.Group != tenant {
		t.Fatalf("UpsertSchedule must keep the job's group: %v %+v", err, stored)
	}

	// RegisterQueue replaces the whole config: without group limits, the queue has none.
	again, _, err := c.RegisterQueue(ctx, queue, &qm.QueueConfig{DisableDeadLetter: true})
	if err != nil || again.GroupLimits != nil {
		t.Fatalf("RegisterQueue without group limits must clear them: %v %+v", err, again)
	}
}

func TestAPausedGroupWaitsUntilResumed(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx := testContext(t)
	queue := newQueue(t, c, nil)
	// Paused before it has jobs: known, idle and paused; pausing again changes nothing.
	for range 2 {
		idle, err := c.PauseGroup(ctx, queue, "slow")
		if err != nil || *idle != (qm.GroupInfo{Group: "slow", Paused: true}) {
			t.Fatalf("PauseGroup(slow): %v %+v", err, idle)
		}
	}
	var slow []string
	for i := range 2 {
		slow = append(slow, add(t, c, queue, fmt.Sprintf("s%d", i), nil, &qm.JobOptions{Group: "slow"}).ID)
	}
	for i := range 2 {
		add(t, c, queue, fmt.Sprintf("f%d", i), nil, &qm.JobOptions{Group: "fast"})
	}
	runs := make(chan string, 4)
	startWorker(t, c, qm.WorkerConfig{Concurrency: 1, Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			runs <- job.Name
			return nil, nil
		},
	}})
	// The groups take turns: unpaused, a "slow" job would have run before the second "fast" one.
	if got := []string{receive(t, runs, "a run"), receive(t, runs, "a run")}; !slices.Equal(got, []string{"f0", "f1"}) {
		t.Fatalf("runs %v while slow is paused, want f0 f1", got)
	}
	page, err := c.ListGroups(ctx, queue, 0, "")
	if err != nil {
		t.Fatalf("ListGroups: %v", err)
	}
	for _, g := range page.Groups { // "fast" while its last run ends, then forgotten
		if (g.Group == "slow") != (g.Paused && g.Waiting == 2) || (g.Group != "slow" && g.Group != "fast") {
			t.Fatalf("ListGroups must show slow paused with its two jobs, and fast not paused: %+v", g)
		}
	}
	if !slices.ContainsFunc(page.Groups, func(g *qm.GroupInfo) bool { return g.Group == "slow" }) {
		t.Fatalf("ListGroups must list the paused group: %+v", page.Groups)
	}
	for _, id := range slow {
		if job, err := c.GetJob(ctx, queue, id); err != nil || job.State != qm.StateWaiting {
			t.Fatalf("a paused group's job must wait: %v %+v", err, job)
		}
	}
	if metrics, err := c.GetQueueMetrics(ctx, queue); err != nil || metrics.GroupsPaused != 1 {
		t.Fatalf("GetQueueMetrics must count the paused group: %v %+v", err, metrics)
	}
	resumed, err := c.ResumeGroup(ctx, queue, "slow")
	if err != nil || resumed.Group != "slow" || resumed.Paused {
		t.Fatalf("ResumeGroup(slow): %v %+v", err, resumed)
	}
	if metrics, err := c.GetQueueMetrics(ctx, queue); err != nil || metrics.GroupsPaused != 0 {
		t.Fatalf("GetQueueMetrics once slow is resumed: want no paused group: %v %+v", err, metrics)
	}
	if got := []string{receive(t, runs, "a run"), receive(t, runs, "a run")}; !slices.Equal(got, []string{"s0", "s1"}) {
		t.Fatalf("runs %v once slow is resumed, want s0 s1", got)
	}
	if again, err := c.ResumeGroup(ctx, queue, "slow"); err != nil || again.Paused {
		t.Fatalf("ResumeGroup again must change nothing: %v %+v", err, again)
	}
	// Refused before the call, naming the argument; NOT_FOUND for a queue the server does not know.
	if _, err := c.PauseGroup(ctx, queue, ""); err == nil || !strings.Contains(err.Error(), "group is required") {
		t.Fatalf("PauseGroup without a group, got %v", err)
	}
	if _, err := c.ResumeGroup(ctx, queue, "a\x00"); err == nil || !strings.Contains(err.Error(), "U+0000") {
		t.Fatalf("ResumeGroup with a control character, got %v", err)
	}
	if _, err := c.PauseGroup(ctx, queue+"-none", "g"); !errors.Is(err, qm.ErrNotFound) {
		t.Fatalf("PauseGroup of an unknown queue: want ErrNotFound, got %v", err)
	}
	if _, err := c.ResumeGroup(ctx, queue+"-none", "g"); !errors.Is(err, qm.ErrNotFound) {
		t.Fatalf("ResumeGroup of an unknown queue: want ErrNotFound, got %v", err)
	}
}

func TestBadGroupsAreRefusedWithTheField(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ctx := testContext(t)
	queue := newQueue(t, c, nil)
	// The limit counts characters as the server does, not bytes: 128 two-byte characters are a group.
	longest := strings.Repeat("é", qm.MaxGroupLength)
	if job := add(t, c, queue, "longest", nil, &qm.JobOptions{Group: longest}); job.Group != longest {
		t.Fatalf("a group of %d characters must be stored whole, got %q", qm.MaxGroupLength, job.Group)
	}
	// Refused before the call, naming the Go field.
	for _, bad := range []struct {
		group, words string
	}{
		{longest + "é", "JobOptions.Group is 129 characters long; the limit is 128"},
		{"a\nb", `JobOptions.Group "a\nb" must not contain control characters (found U+000A)`},
		{"a\u0085b", `JobOptions.Group "a\u0085b" must not contain control characters (found U+0085)`},
		{"tab\there", "(found U+0009)"},
		{"del\x7f", "(found U+007F)"},
		{"bad\xff", `JobOptions.Group "bad\xff" is not valid UTF-8`},
	} {
		_, err := c.AddJob(ctx, queue, "j", nil, &qm.JobOptions{Group: bad.group})
		var rpc *qm.Error
		if err == nil || errors.As(err, &rpc) || !strings.Contains(err.Error(), bad.words) {
			t.Fatalf("AddJob with group %q must fail before the call with %q, got %v", bad.group, bad.words, err)
		}
	}
	link := qm.ChainLink{Queue: queue, Name: "next", Options: &qm.JobOptions{Group: "x\ny"}}
	chained := &qm.JobOptions{ChainTo: []qm.ChainLink{link}}
	if _, err := c.AddJob(ctx, queue, "j", nil, chained); err == nil ||
		!strings.Contains(err.Error(), "JobOptions.Group") {
		t.Fatalf("a chain link's group is checked too, got %v", err)
	}
	if _, err := c.SetGroupLimits(ctx, queue, "", qm.GroupLimits{}); err == nil ||
		!strings.Contains(err.Error(), "group is required: a group is 1 to 128 characters") {
		t.Fatalf("SetGroupLimits without a group, got %v", err)
	}
	if _, err := c.ClearGroupLimits(ctx, queue, "a\x00"); err == nil || !strings.Contains(err.Error(), "U+0000") {
		t.Fatalf("ClearGroupLimits with a control character, got %v", err)
	}
	if _, err := c.SetGroupLimits(ctx, queue, "g", qm.GroupLimits{Concurrency: -1}); err == nil ||
		!strings.Contains(err.Error(), "GroupLimits.Concurrency must be from 0") {
		t.Fatalf("a negative group concurrency, got %v", err)
	}
	config := &qm.QueueConfig{GroupLimits: &qm.GroupLimits{RateLimit: &qm.RateLimit{Max: -2, Duration: time.Second}}}
	if _, _, err := c.RegisterQueue(ctx, queue, config); err == nil ||
		!strings.Contains(err.Error(), "QueueConfig.GroupLimits.RateLimit.Max must be from 0") {
		t.Fatalf("a negative group rate, got %v", err)
	}

	// The server's refusals: INVALID_ARGUMENT naming the field, NOT_FOUND for a queue it does not know.
	for _, call := range []struct {
		name  string
		err   error
		words string
		call  func() error
	}{
		{"a group in the queue's default options", qm.ErrInvalidArgument, "default_job_options.group", func() error {
			_, _, err := c.RegisterQueue(ctx, queue, &qm.QueueConfig{DefaultJobOptions: &qm.JobOptions{Group: "a"}})
			return err
		}},
		{"a group rate limit with no window", qm.ErrInvalidArgument, "limits.rate_limit.duration", func() error {
			_, err := c.SetGroupLimits(ctx, queue, "g", qm.GroupLimits{RateLimit: &qm.RateLimit{Max: 5}})
			return err
		}},
		{"ListGroups of an unknown queue", qm.ErrNotFound, "", func() error {
			_, err := c.ListGroups(ctx, queue+"-none", 0, "")
			return err
		}},
		{"SetGroupLimits of an unknown queue", qm.ErrNotFound, "", func() error {
			_, err := c.SetGroupLimits(ctx, queue+"-none", "g", qm.GroupLimits{Concurrency: 1})
			return err
		}},
	} {
		if err := call.call(); !errors.Is(err, call.err) || !strings.Contains(err.Error(), call.words) {
			t.Fatalf("%s: want %v naming %q, got %v", call.name, call.err, call.words, err)
		}
	}
	// Only the job with the longest group was added, and no group was made.
	page, err := c.ListGroups(ctx, queue, 0, "")
	if err != nil || page.Total != 1 || page.Groups[0].Group != longest || page.Groups[0].CustomLimits {
		t.Fatalf("the refused calls must change nothing: %v %+v", err, page)
	}
}

func TestLIFOJobsGoToTheHeadOfTheirLevel(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	queue := newQueue(t, c, nil)
	add(t, c, queue, "old", nil, nil)
	newest := add(t, c, queue, "new", nil, &qm.JobOptions{LIFO: true})
	if !newest.LIFO {
		t.Fatalf("the added job reads LIFO false")
	}
	runs := make(chan string, 2)
	startWorker(t, c, qm.WorkerConfig{Concurrency: 1, Handlers: map[string]qm.Handler{
		queue: func(ctx context.Context, job *qm.Job) (any, error) {
			runs <- job.Name
			return nil, nil
		},
	}})
	if got := []string{receive(t, runs, "the first run"), receive(t, runs, "the second run")}; !slices.Equal(got, []string{"new", "old"}) {
		t.Fatalf("runs in order %v, want [new old]", got)
	}
}

package queuemanager

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/queue-manager/queue-manager/clients/go/gen/queue_manager/v1"
)

// Finding jobs by what they are and acting on those found (docs/jobs.md, "Find jobs by filter, act on what
// was found"). The server keeps no index for a filter: each call reads at most a few thousand jobs of the
// state, so a filtered page, or a bulk call, may hold fewer jobs than asked, or none, and still carry a
// token. The listing or the bulk action is complete only when the token comes back "".

// MaxBulkLimit is the most jobs one RetryJobs, CancelJobs or RemoveJobs call acts on (the server's limit).
const MaxBulkLimit = 1000

// JobFilter picks jobs by what they are: a job matches when it matches every condition set. The zero value
// (every field empty or zero) matches every job; a field left empty is no condition.
type JobFilter struct {
	// Name is the job name, exact ("send-email"), or a prefix when it ends with "*" ("send-*"); a '*'
	// anywhere else is refused, and so is "*" alone (leave Name empty instead).
	Name string
	// Group is the fairness group (JobOptions.Group), exact.
	Group string
	// Tag is a tag the job's metadata holds (Metadata.Tags), exact.
	Tag string
	// CorrelationID is the job's correlation id (Metadata.CorrelationID), exact.
	CorrelationID string
	// CreatedAfter keeps the jobs created at or after this time (zero: no bound).
	CreatedAfter time.Time
	// CreatedBefore keeps the jobs created before this time (zero: no bound); it must come after
	// CreatedAfter (to the millisecond, as the server compares them).
	CreatedBefore time.Time
}

// filterText checks a condition's text: no blank value (no job holds one; leaving the field empty is how
// every job matches), valid UTF-8 (protobuf would refuse to encode it, naming no field).
func filterText(field, value string) error {
	if value == "" {
		return nil
	}
	if strings.TrimSpace(value) == "" {
		return fmt.Errorf("JobFilter.%s is blank; leave it empty to match every job", field)
	}
	if !utf8.ValidString(value) {
		return fmt.Errorf("JobFilter.%s %q is not valid UTF-8", field, value)
	}
	return nil
}

// proto checks the filter as the server would and returns it for the wire (nil when it sets no condition).
func (f JobFilter) proto() (*pb.JobFilter, error) {
	if f == (JobFilter{}) {
		return nil, nil
	}
	for _, text := range []struct{ field, value string }{
		{"Name", f.Name}, {"Tag", f.Tag}, {"CorrelationID", f.CorrelationID},
	} {
		if err := filterText(text.field, text.value); err != nil {
			return nil, err
		}
	}
	if f.Group != "" {
		if err := checkGroup("JobFilter.Group", f.Group); err != nil {
			return nil, err
		}
		if err := filterText("Group", f.Group); err != nil {
			return nil, err
		}
	}
	if strings.Contains(strings.TrimSuffix(f.Name, "*"), "*") {
		return nil, fmt.Errorf("JobFilter.Name %q holds a '*' before its end; '*' may only end a name ('send-*')", f.Name)
	}
	if f.Name == "*" {
		return nil, fmt.Errorf("JobFilter.Name '*' matches every name; leave it empty instead")
	}
	out := &pb.JobFilter{Name: f.Name, Group: f.Group, Tag: f.Tag, CorrelationId: f.CorrelationID}
	if !f.CreatedAfter.IsZero() {
		out.CreatedAfter = timestamppb.New(f.CreatedAfter)
	}
	if !f.CreatedBefore.IsZero() {
		out.CreatedBefore = timestamppb.New(f.CreatedBefore)
	}
	if !f.CreatedAfter.IsZero() && !f.CreatedBefore.IsZero() &&
		f.CreatedAfter.UnixMilli() >= f.CreatedBefore.UnixMilli() {
		return nil, fmt.Errorf("JobFilter.CreatedAfter (%s) is not before JobFilter.CreatedBefore (%s): no job can match",
			f.CreatedAfter.Format(time.RFC3339Nano), f.CreatedBefore.Format(time.RFC3339Nano))
	}
	return out, nil
}

// ListJobsMatching returns a page of a queue's jobs in one state that match the filter (ListJobs is this
// with the zero JobFilter). pageSize is 1 to 1,000 (0 means 100); pageToken is "" for the first page, then
// the previous page's NextPageToken. With a filter a page may hold fewer jobs than pageSize, or none, and
// still carry a NextPageToken: follow it until it is "". Pages keep ListJobs's order; JobPage.Total stays the
// number of jobs in the state, matching or not. A bad filter is refused before the call.
func (c *Client) ListJobsMatching(
	ctx context.Context, queue string, state JobState, filter JobFilter, pageSize int, pageToken string,
) (*JobPage, error) {
	if pageSize < 0 || pageSize > math.MaxUint32 {
		return nil, fmt.Errorf("pageSize must be from 0 to 1000, got %d", pageSize)
	}
	f, err := filter.proto()
	if err != nil {
		return nil, err
	}
	resp, err := c.queues.ListJobs(ctx, &pb.ListJobsRequest{
		QueueName: queue, State: pb.JobState(state), PageSize: uint32(pageSize), PageToken: pageToken, Filter: f,
	})
	if err != nil {
		return nil, fromRPC(err)
	}
	page := &JobPage{NextPageToken: resp.GetNextPageToken(), Total: int(resp.GetTotalSize())}
	for _, job := range resp.GetJobs() {
		page.Jobs = append(page.Jobs, jobFromProto(job))
	}
	return page, nil
}

// CountOptions say where CountJobs starts and how many calls it may make.
type CountOptions struct {
	// PageToken is where to start: "" for the state's start, or a previous count's (or listing's) token.
	PageToken string
	// MaxCalls is the most ListJobs calls; 0 means until the state's end.
	MaxCalls int
}

// JobCount is how many jobs of a state match a filter (CountJobs).
type JobCount struct {
	// Count is the matches counted.
	Count int
	// NextPageToken is where counting would go on (CountOptions.PageToken); "" once the whole state was read.
	NextPageToken string
	// Calls is the ListJobs calls made.
	Calls int
}

// Complete reports whether the whole state was read: Count is every match (as of the reads).
func (n *JobCount) Complete() bool { return n.NextPageToken == "" }

// CountJobs counts the jobs of one state that match the filter, on the server (ListJobs count_only): no
// job is sent back. With a filter each call reads at most a few thousand jobs of the state, so counting
// follows the tokens, one call after the other, to the end of the state or for at most opts.MaxCalls
// calls; the result's NextPageToken then says where to go on. A bad filter or a negative MaxCalls is
// refused before the call.
func (c *Client) CountJobs(ctx context.Context, queue string, state JobState, filter JobFilter, opts CountOptions) (
	*JobCount, error,
) {
	if opts.MaxCalls < 0 {
		return nil, fmt.Errorf("CountOptions.MaxCalls must be at least 1 (0: until the end), got %d", opts.MaxCalls)
	}
	f, err := filter.proto()
	if err != nil {
		return nil, err
	}
	out := &JobCount{NextPageToken: opts.PageToken}
	for opts.MaxCalls == 0 || out.Calls < opts.MaxCalls {
		resp, err := c.queues.ListJobs(ctx, &pb.ListJobsRequest{
			QueueName: queue, State: pb.JobState(state), PageToken: out.NextPageToken, Filter: f, CountOnly: true,
		})
		if err != nil {
			return nil, fromRPC(err)
		}
		out.Count += int(resp.GetMatchCount())
		out.Calls++
		out.NextPageToken = resp.GetNextPageToken()
		if out.NextPageToken == "" {
			break
		}
	}
	return out, nil
}

// BulkOptions bound one RetryJobs, CancelJobs or RemoveJobs call; the zero value acts on every job of the
// state, up to MaxBulkLimit, from the start.
type BulkOptions struct {
	// Filter picks the jobs acted on (the zero value: every job of the state).
	Filter JobFilter
	// Limit is the most jobs this call acts on, 1 to MaxBulkLimit; 0 means MaxBulkLimit.
	Limit int
	// PageToken is the previous call's BulkActionResult.NextPageToken; "" to start.
	PageToken string
}

// BulkActionResult is what one bounded bulk call did.
type BulkActionResult struct {
	// Count is the jobs retried, cancelled or removed.
	Count int
	// Requested is the active jobs whose workers were told to stop them (CancelJobs only); each ends
	// cancelled when its run stops.
	Requested int
	// NextPageToken is where the next call continues (BulkOptions.PageToken); "" once the whole state was
	// read, and only then is the action complete.
	NextPageToken string
}

// bulkRequest checks the options and returns the filter and limit for the wire.
func (o BulkOptions) bulkRequest() (*pb.JobFilter, uint32, error) {
	if o.Limit < 0 || o.Limit > MaxBulkLimit {
		return nil, 0, fmt.Errorf("BulkOptions.Limit must be from 1 to %d (0 means %d), got %d",
			MaxBulkLimit, MaxBulkLimit, o.Limit)
	}
	f, err := o.Filter.proto()
	return f, uint32(o.Limit), err
}

// RetryJobs runs the failed jobs that match opts.Filter again, their attempts counted afresh (with state
// StateCancelled, the cancelled ones; 0 means StateFailed): one bounded call, newest failure first. Call
// again with the result's NextPageToken until it is "". RetryFailedJobs runs every one in one call.
func (c *Client) RetryJobs(ctx context.Context, queue string, state JobState, opts BulkOptions) (
	*BulkActionResult, error,
) {
	if state != 0 && state != StateFailed && state != StateCancelled {
		return nil, fmt.Errorf("RetryJobs takes StateFailed or StateCancelled, got %s", state)
	}
	f, limit, err := opts.bulkRequest()
	if err != nil {
		return nil, err
	}
	if limit == 0 {
		// A limit always, so that the call is bounded even with no filter and no token (the server runs every
		// failed job in one call when none of the three is set: RetryFailedJobs).
		limit = MaxBulkLimit
	}
	resp, err := c.queues.RetryFailedJobs(ctx, &pb.RetryFailedJobsRequest{
		QueueName: queue, State: pb.JobState(state), Filter: f, Limit: limit,
		PageToken: opts.PageToken,
	})
	if err != nil {
		return nil, fromRPC(err)
	}
	return &BulkActionResult{Count: int(resp.GetCount()), NextPageToken: resp.GetNextPageToken()}, nil
}

// CancelJobs cancels the jobs of one state (StateWaiting, StatePaused, StateDelayed or StateActive) that
// match opts.Filter, with reason kept on each: waiting, paused and delayed ones at once (Count), while an
// active one's worker is told to stop it, as CancelJob does (Requested). One bounded call: call again with
// the result's NextPageToken until it is "". A finished state gives ErrInvalidArgument.
func (c *Client) CancelJobs(ctx context.Context, queue string, state JobState, reason string, opts BulkOptions) (
	*BulkActionResult, error,
) {
	f, limit, err := opts.bulkRequest()
	if err != nil {
		return nil, err
	}
	resp, err := c.queues.CancelJobs(ctx, &pb.CancelJobsRequest{
		QueueName: queue, State: pb.JobState(state), Filter: f, Limit: limit, PageToken: opts.PageToken,
		Reason: reason,
	})
	if err != nil {
		return nil, fromRPC(err)
	}
	return &BulkActionResult{
		Count: int(resp.GetCount()), Requested: int(resp.GetRequestedCount()), NextPageToken: resp.GetNextPageToken(),
	}, nil
}

// RemoveJobs removes the jobs of one state (any but StateActive: cancel those first) that match
// opts.Filter. One bounded call: call again with the result's NextPageToken until it is "". StateActive
// gives ErrInvalidArgument.
func (c *Client) RemoveJobs(ctx context.Context, queue string, state JobState, opts BulkOptions) (
	*BulkActionResult, error,
) {
	f, limit, err := opts.bulkRequest()
	if err != nil {
		return nil, err
	}
	resp, err := c.queues.RemoveJobs(ctx, &pb.RemoveJobsRequest{
		QueueName: queue, State: pb.JobState(state), Filter: f, Limit: limit, PageToken: opts.PageToken,
	})
	if err != nil {
		return nil, fromRPC(err)
	}
	return &BulkActionResult{Count: int(resp.GetCount()), NextPageToken: resp.GetNextPageToken()}, nil
}

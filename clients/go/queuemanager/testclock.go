package queuemanager

// The clock of a server made for tests (`qm test-server`, docs/testing.md): moving it forward makes
// delays, backoffs, schedules, timeouts and expiries happen at once (TestClockService; as the Python
// client's test_clock.py).

import (
	"context"
	"fmt"
	"time"

	pb "github.com/queue-manager/queue-manager/clients/go/gen/queue_manager/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// maxClockAdvance is the server's bound on one move of the test clock: ten years.
const maxClockAdvance = 10 * 365 * 24 * time.Hour

// AdvanceTestClock moves the server's test clock d forward (0 or more, up to ten years) and returns its
// time after the move, once the server has done what fell due by then: delayed jobs and retries due are
// waiting (or already delivered), due schedules have fired, runs past their timeout have failed, expired
// jobs have ended. A server on real time (any `qm serve`) refuses with ErrFailedPrecondition and nothing
// changes; a negative or too large d is refused before the call.
func (c *Client) AdvanceTestClock(ctx context.Context, d time.Duration) (time.Time, error) {
	if d < 0 || d > maxClockAdvance {
		return time.Time{}, fmt.Errorf("the test clock moves forward by 0 to ten years, not %v", d)
	}
	resp, err := pb.NewTestClockServiceClient(c.conn).AdvanceClock(ctx,
		&pb.AdvanceClockRequest{Amount: durationpb.New(d)})
	if err != nil {
		return time.Time{}, fromRPC(err)
	}
	return resp.GetNow().AsTime(), nil
}

// TestClockNow is the server's test clock: real time plus every advance so far. A server on real time
// refuses with ErrFailedPrecondition.
func (c *Client) TestClockNow(ctx context.Context) (time.Time, error) {
	resp, err := pb.NewTestClockServiceClient(c.conn).GetClock(ctx, &pb.GetClockRequest{})
	if err != nil {
		return time.Time{}, fromRPC(err)
	}
	return resp.GetNow().AsTime(), nil
}

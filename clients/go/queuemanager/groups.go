package queuemanager

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	pb "github.com/queue-manager/queue-manager/clients/go/gen/queue_manager/v1"
)

// MaxGroupLength is the longest fairness group name (JobOptions.Group), in characters (Unicode code points,
// not bytes), as the server counts them. The server checks too; the client checks first so that the error
// names the Go field, and so that a name that is not UTF-8 never reaches the wire (protobuf refuses to
// encode it, which would fail the call with no word on which field).
const MaxGroupLength = 128

// RoutePrefix starts the name of a routing group, the group the server keeps the jobs with WorkerLabels in
// ("labels:gpu=a100,region=eu"): a job's own Group may not start with it, and the group calls take such a
// name, up to maxRouteGroupLength characters, as ListGroups gives it.
const RoutePrefix = "labels:"

// maxRouteGroupLength is the longest routing group name: the prefix and 16 pairs of a 64-character key and
// a 128-character value, "key=value" joined by ','.
const maxRouteGroupLength = len(RoutePrefix) + 16*(64+128+2)

// checkGroup checks a fairness group name: valid UTF-8, 1 to MaxGroupLength characters, no control
// characters (the server's rule: a group is part of key names and of log lines).
func checkGroup(field, group string) error {
	if group == "" {
		return fmt.Errorf("%s is required: a group is 1 to %d characters", field, MaxGroupLength)
	}
	if !utf8.ValidString(group) {
		return fmt.Errorf("%s %q is not valid UTF-8", field, group)
	}
	longest := MaxGroupLength
	if strings.HasPrefix(group, RoutePrefix) {
		longest = maxRouteGroupLength
	}
	if n := utf8.RuneCountInString(group); n > longest {
		return fmt.Errorf("%s is %d characters long; the limit is %d", field, n, longest)
	}
	for _, r := range group {
		// C0, DEL, C1 (NEL among them) and the line and paragraph separators, as the server refuses.
		if r < 0x20 || (r >= 0x7f && r <= 0x9f) || r == 0x2028 || r == 0x2029 {
			return fmt.Errorf("%s %q must not contain control characters (found U+%04X)", field, group, r)
		}
	}
	return nil
}

// GroupLimits bound the jobs of one fairness group, on top of the queue's own limits: in
// QueueConfig.GroupLimits they apply to each group of the queue on its own; SetGroupLimits gives one
// group limits of its own instead.
type GroupLimits struct {
	// Concurrency is the most jobs of the group active at once across all workers; 0 means no limit.
	Concurrency int
	// RateLimit limits the group's job starts (a token bucket); nil means unlimited.
	RateLimit *RateLimit
	// MaxSize (producer backpressure) is the most jobs of the group waiting (ready to run; a delayed one
	// counts once due). An add beyond it fails with ErrResourceExhausted. 0 means no limit.
	MaxSize uint64
}

func (g *GroupLimits) proto(c *counts, field string) *pb.GroupLimits {
	if g == nil {
		return nil
	}
	return &pb.GroupLimits{
		Concurrency: c.of(field+".Concurrency", g.Concurrency),
		RateLimit:   g.RateLimit.proto(c, field+".RateLimit"),
		MaxSize:     g.MaxSize,
	}
}

func (r *RateLimit) proto(c *counts, field string) *pb.RateLimit {
	if r == nil {
		return nil
	}
	return &pb.RateLimit{Max: c.of(field+".Max", r.Max), Duration: duration(r.Duration), Burst: c.of(field+".Burst", r.Burst)}
}

func rateLimitFromProto(p *pb.RateLimit) *RateLimit {
	if p == nil || p.GetMax() == 0 {
		return nil
	}
	return &RateLimit{Max: int(p.GetMax()), Duration: durationOf(p.GetDuration()), Burst: int(p.GetBurst())}
}

// groupLimitsFromProto reads limits back; "no limit at all" is the zero GroupLimits.
func groupLimitsFromProto(p *pb.GroupLimits) GroupLimits {
	return GroupLimits{
		Concurrency: int(p.GetConcurrency()),
		RateLimit:   rateLimitFromProto(p.GetRateLimit()),
		MaxSize:     p.GetMaxSize(),
	}
}

// GroupInfo is one fairness group of a queue (ListGroups, SetGroupLimits, PauseGroup, ResumeGroup).
type GroupInfo struct {
	// Group is the group's name (JobOptions.Group).
	Group string
	// Waiting counts its jobs ready to run; Active its jobs leased to workers.
	Waiting uint64
	Active  uint64
	// Limits are the limits that apply to it: its own, else the queue's QueueConfig.GroupLimits (the zero
	// GroupLimits when neither limits it).
	Limits GroupLimits
	// CustomLimits tells whether Limits are the group's own (SetGroupLimits).
	CustomLimits bool
	// Paused tells whether the group is paused: by PauseGroup (its jobs are added but none starts until
	// ResumeGroup), or by one of its maintenance windows (until MaintenanceUntil), or both.
	Paused bool
	// PausedUntil is when its timed pause lifts by itself (PauseGroup with ResumeAfter or ResumeAt); the zero
	// time for a pause until ResumeGroup, and when not paused.
	PausedUntil time.Time
	// MaintenanceUntil is, while one of its own maintenance windows (SetGroupLimits) holds the group (Paused
	// is then true), when the window ends; the zero time outside its windows. The windows themselves are
	// read with the MaintenanceWindows method.
	MaintenanceUntil time.Time
	// NextMaintenanceTime is when its next window starts; the zero time without windows.
	NextMaintenanceTime time.Time
	// windows holds the group's own maintenance windows as the wire encodes them (deterministic protobuf
	// bytes of a GroupLimits holding only them; "" without windows). A string, not a slice, so that
	// GroupInfo stays comparable with ==, which callers may rely on, and two reads of the same windows
	// compare equal.
	windows string
}

// MaintenanceWindows returns the group's own maintenance windows (SetGroupLimits), in the order they were
// set; nil when it has none. Each call returns a new slice: changing it changes nothing else. A group
// without limits of its own has none (QueueConfig.GroupLimits takes no windows).
func (g *GroupInfo) MaintenanceWindows() []MaintenanceWindow {
	if g == nil || g.windows == "" {
		return nil
	}
	var limits pb.GroupLimits
	if err := proto.Unmarshal([]byte(g.windows), &limits); err != nil {
		return nil // not reached: groupFromProto wrote these bytes from a message it had
	}
	return maintenanceWindowsFromProto(limits.GetMaintenanceWindows())
}

// windowsKey encodes a group's windows for GroupInfo.windows.
func windowsKey(windows []*pb.MaintenanceWindow) string {
	if len(windows) == 0 {
		return ""
	}
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(&pb.GroupLimits{MaintenanceWindows: windows})
	if err != nil {
		return "" // not reached: windows the server sent marshal again
	}
	return string(raw)
}

func groupFromProto(p *pb.GroupInfo) *GroupInfo {
	if p == nil {
		return nil
	}
	return &GroupInfo{
		Group:               p.GetGroup(),
		Waiting:             p.GetWaiting(),
		Active:              p.GetActive(),
		Limits:              groupLimitsFromProto(p.GetLimits()),
		CustomLimits:        p.GetCustomLimits(),
		Paused:              p.GetPaused(),
		PausedUntil:         timeOf(p.GetPausedUntil()),
		MaintenanceUntil:    timeOf(p.GetMaintenanceUntil()),
		NextMaintenanceTime: timeOf(p.GetNextMaintenanceTime()),
		windows:             windowsKey(p.GetLimits().GetMaintenanceWindows()),
	}
}

// GroupPage is one page of ListGroups.
type GroupPage struct {
	// Groups of this page, by name.
	Groups []*GroupInfo
	// NextPageToken asks for the next page; "" on the last page.
	NextPageToken string
	// Total is the number of groups known to the queue: those with jobs waiting or active, and those with
	// limits of their own.
	Total int
}

// ListGroups returns a page of a queue's fairness groups, sorted by name, with their jobs and limits.
// pageSize is 1 to 1,000 (0 means 100); pageToken is "" for the first page, then the previous page's
// NextPageToken.
func (c *Client) ListGroups(ctx context.Context, queue string, pageSize int, pageToken string) (*GroupPage, error) {
	if pageSize < 0 || pageSize > math.MaxUint32 {
		return nil, fmt.Errorf("pageSize must be from 0 to 1000, got %d", pageSize)
	}
	resp, err := c.queues.ListGroups(ctx, &pb.ListGroupsRequest{
		QueueName: queue, PageSize: uint32(pageSize), PageToken: pageToken,
	})
	if err != nil {
		return nil, fromRPC(err)
	}
	page := &GroupPage{NextPageToken: resp.GetNextPageToken(), Total: int(resp.GetTotalSize())}
	for _, g := range resp.GetGroups() {
		page.Groups = append(page.Groups, groupFromProto(g))
	}
	return page, nil
}

// SetGroupLimits gives one fairness group limits of its own, which replace the queue's
// QueueConfig.GroupLimits for it (the zero GroupLimits lifts every per-group limit from it), and returns
// the group as it is now. A group with limits of its own is known to the queue (ListGroups) even while it
// has no jobs. A rate limit needs a positive Duration (else ErrInvalidArgument, naming the field).
//
// windows are the group's own maintenance windows, set with its limits (none given: none): while the
// server's clock is inside one, none of the group's jobs starts (as if paused; its running jobs finish) while
// the queue's other groups run. A window never lifts a PauseGroup, and ResumeGroup inside a window ends only
// that pause. At most 16; a bad cron, zone or duration fails with ErrInvalidArgument naming the window.
func (c *Client) SetGroupLimits(
	ctx context.Context, queue, group string, limits GroupLimits, windows ...MaintenanceWindow,
) (*GroupInfo, error) {
	if err := checkGroup("group", group); err != nil {
		return nil, err
	}
	var n counts
	p := limits.proto(&n, "GroupLimits")
	if n.err != nil {
		return nil, n.err
	}
	var err error
	if p.MaintenanceWindows, err = maintenanceWindowsProto("windows", windows); err != nil {
		return nil, err
	}
	return c.setGroupLimits(ctx, &pb.SetGroupLimitsRequest{QueueName: queue, Group: group, Limits: p})
}

// ClearGroupLimits removes a group's own limits: the queue's QueueConfig.GroupLimits apply to it again, and
// a group with no jobs is forgotten. It returns the group as it is now.
func (c *Client) ClearGroupLimits(ctx context.Context, queue, group string) (*GroupInfo, error) {
	if err := checkGroup("group", group); err != nil {
		return nil, err
	}
	return c.setGroupLimits(ctx, &pb.SetGroupLimitsRequest{QueueName: queue, Group: group, Clear: true})
}

func (c *Client) setGroupLimits(ctx context.Context, req *pb.SetGroupLimitsRequest) (*GroupInfo, error) {
	resp, err := c.queues.SetGroupLimits(ctx, req)
	if err != nil {
		return nil, fromRPC(err)
	}
	return groupFromProto(resp.GetGroup()), nil
}

// PauseGroup pauses one fairness group: its jobs are still added, but none starts until ResumeGroup; its
// active jobs run on and the queue's other groups keep taking their turns. The group need not have jobs (a
// paused group is known to the queue while idle too); pausing a paused group changes nothing. It returns the
// group as it is now. With ResumeAfter or ResumeAt the group resumes by itself then, as for PauseQueue. The
// call needs the admin role.
func (c *Client) PauseGroup(ctx context.Context, queue, group string, opts ...PauseOption) (*GroupInfo, error) {
	if err := checkGroup("group", group); err != nil {
		return nil, err
	}
	after, at, err := pauseTimeProto(opts)
	if err != nil {
		return nil, err
	}
	request := &pb.PauseGroupRequest{QueueName: queue, Group: group, ResumeAfter: after, ResumeAt: at}
	resp, err := c.queues.PauseGroup(ctx, request)
	if err != nil {
		return nil, fromRPC(err)
	}
	return groupFromProto(resp.GetGroup()), nil
}

// ResumeGroup resumes a paused fairness group: its waiting jobs take their turns again at once (an idle group
// without limits of its own is then forgotten). Resuming a group that is not paused changes nothing. It
// returns the group as it is now. The call needs the admin role.
func (c *Client) ResumeGroup(ctx context.Context, queue, group string) (*GroupInfo, error) {
	if err := checkGroup("group", group); err != nil {
		return nil, err
	}
	resp, err := c.queues.ResumeGroup(ctx, &pb.ResumeGroupRequest{QueueName: queue, Group: group})
	if err != nil {
		return nil, fromRPC(err)
	}
	return groupFromProto(resp.GetGroup()), nil
}

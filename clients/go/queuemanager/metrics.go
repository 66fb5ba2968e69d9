package queuemanager

import (
	"context"
	"errors"
	"io"
	"iter"
	"maps"
	"time"

	pb "github.com/queue-manager/queue-manager/clients/go/gen/queue_manager/v1"
)

// WorkerInfo describes one connected worker, as ListWorkers and WatchMetrics report it.
type WorkerInfo struct {
	ID       string
	ServerID string // the server whose stream it holds
	Host     string
	Language string // client language, e.g. "go"
	Version  string // client library version
	Queues   []string
	// Concurrency is the most jobs it runs at once; InFlight the jobs it holds now.
	Concurrency int
	InFlight    int
	ConnectTime time.Time
	// LastHeartbeatTime is when it last reported anything, heartbeats included.
	LastHeartbeatTime time.Time
	// CPUPercent (of one core) and MemoryBytes (resident) are 0 when it reports none.
	CPUPercent  float64
	MemoryBytes uint64
	Labels      map[string]string
	Uptime      time.Duration
	// State says whether it takes jobs: active, quiet or stopping (QuietWorker, StopWorker).
	State WorkerState
	// Tier is its preference among the workers of its queues (WorkerConfig.Tier; 0: the first).
	Tier int
}

func workerFromProto(p *pb.WorkerInfo) *WorkerInfo {
	return &WorkerInfo{
		ID:                p.GetWorkerId(),
		ServerID:          p.GetServerId(),
		Host:              p.GetHost(),
		Language:          p.GetLanguage(),
		Version:           p.GetVersion(),
		Queues:            p.GetQueues(),
		Concurrency:       int(p.GetConcurrency()),
		InFlight:          int(p.GetInFlight()),
		ConnectTime:       timeOf(p.GetConnectTime()),
		LastHeartbeatTime: timeOf(p.GetLastHeartbeatTime()),
		CPUPercent:        p.GetCpuPercent(),
		MemoryBytes:       p.GetMemoryBytes(),
		Labels:            maps.Clone(p.GetLabels()),
		Uptime:            durationOf(p.GetUptime()),
		State:             workerStateOf(p.GetState()),
		Tier:              int(p.GetTier()),
	}
}

func workersFromProto(ps []*pb.WorkerInfo) []*WorkerInfo {
	out := make([]*WorkerInfo, 0, len(ps))
	for _, p := range ps {
		out = append(out, workerFromProto(p))
	}
	return out
}

// ListWorkers returns the connected workers (of every server of a cluster), by worker id; a queue name
// keeps those taking jobs of that queue ("" for all).
func (c *Client) ListWorkers(ctx context.Context, queue string) ([]*WorkerInfo, error) {
	resp, err := c.queues.ListWorkers(ctx, &pb.ListWorkersRequest{QueueName: queue})
	if err != nil {
		return nil, fromRPC(err)
	}
	return workersFromProto(resp.GetWorkers()), nil
}

// GetAllMetrics returns the metrics of every registered queue, by queue name (one read of the store).
func (c *Client) GetAllMetrics(ctx context.Context) ([]*QueueMetrics, error) {
	resp, err := c.queues.GetAllMetrics(ctx, &pb.GetAllMetricsRequest{})
	if err != nil {
		return nil, fromRPC(err)
	}
	out := make([]*QueueMetrics, 0, len(resp.GetMetrics()))
	for _, m := range resp.GetMetrics() {
		out = append(out, metricsFromProto(m))
	}
	return out, nil
}

// WatchOptions selects what WatchMetrics reports.
type WatchOptions struct {
	// Queues to watch; empty means every queue, those registered later included.
	Queues []string
	// Interval between snapshots, 100 ms to 60 s; 0 means 1 s.
	Interval time.Duration
	// IncludeWorkers adds the connected workers to each snapshot.
	IncludeWorkers bool
}

// MetricsSnapshot is one report of WatchMetrics.
type MetricsSnapshot struct {
	// Time is when the server read it (the store's clock).
	Time time.Time
	// Metrics of the watched queues, by queue name.
	Metrics []*QueueMetrics
	// Workers is filled when WatchOptions.IncludeWorkers asks for it.
	Workers []*WorkerInfo
}

// WatchMetrics streams a snapshot of the queues' metrics every interval (the first at once), for use in a
// range loop:
//
//	for snapshot, err := range client.WatchMetrics(ctx, &qm.WatchOptions{Queues: []string{"emails"}}) {
//		if err != nil {
//			return err // the stream failed: the loop ends after this
//		}
//		use(snapshot)
//	}
//
// The stream opens when the loop starts and closes when the loop breaks or ctx ends (the loop then ends
// without an error). A failure, such as ErrNotFound for an unknown queue or ErrInvalidArgument for an
// interval out of range, comes as the last element. A nil opts watches every queue each second.
func (c *Client) WatchMetrics(ctx context.Context, opts *WatchOptions) iter.Seq2[*MetricsSnapshot, error] {
	if opts == nil {
		opts = &WatchOptions{}
	}
	req := &pb.WatchMetricsRequest{
		QueueNames: opts.Queues, Interval: duration(opts.Interval), IncludeWorkers: opts.IncludeWorkers,
	}
	return func(yield func(*MetricsSnapshot, error) bool) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel() // a break ends the stream
		stream, err := c.queues.WatchMetrics(ctx, req)
		for err == nil {
			var resp *pb.WatchMetricsResponse
			if resp, err = stream.Recv(); err != nil {
				break
			}
			snapshot := &MetricsSnapshot{Time: timeOf(resp.GetTime()), Workers: workersFromProto(resp.GetWorkers())}
			for _, m := range resp.GetMetrics() {
				snapshot.Metrics = append(snapshot.Metrics, metricsFromProto(m))
			}
			if !yield(snapshot, nil) {
				return
			}
		}
		if errors.Is(err, io.EOF) || ctx.Err() != nil {
			return
		}
		yield(nil, fromRPC(err))
	}
}

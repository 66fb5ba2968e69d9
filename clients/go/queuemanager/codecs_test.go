package queuemanager_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	qm "github.com/queue-manager/queue-manager/clients/go/queuemanager"
)

// Payload codecs against a real server: data and results stored encoded and read decoded, plain payloads
// passing through, key rotation, a worker without the key failing the job for good, result conditions
// refused; and, run by tests/test_client_go.py, a job the Python client encrypted run here, and one added
// here for the Python worker.

func aesCodec(t *testing.T, keys map[string][]byte, active string) *qm.AesGcmCodec {
	t.Helper()
	codec, err := qm.NewAesGcmCodec(keys, active)
	if err != nil {
		t.Fatal(err)
	}
	return codec
}

func randomKey() []byte {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	return key
}

func TestCodecsStoreDataAndResultsEncodedAndReadThemDecoded(t *testing.T) {
	k1 := randomKey()
	sealed := newClient(t, qm.WithCodecs(qm.NewGzipCodec(64), aesCodec(t, map[string][]byte{"k1": k1}, "")))
	plain := newClient(t, qm.WithCodecs())
	queue := newQueue(t, sealed, nil)
	data := map[string]any{"card": "4111 1111 1111 1111", "lines": strings.Repeat("x", 300)}
	startWorker(t, sealed, qm.WorkerConfig{Handlers: map[string]qm.Handler{queue: func(_ context.Context, job *qm.Job) (any, error) {
		var in map[string]any
		if err := job.Decode(&in); err != nil {
			return nil, err
		}
		return map[string]any{"charged": in["card"].(string)[15:]}, nil
	}}})
	job := add(t, sealed, queue, "charge", data, nil)
	done := waitFinished(t, sealed, queue, job.ID)
	var result map[string]string
	if err := done.DecodeResult(&result); err != nil || done.State != qm.StateCompleted || result["charged"] != "1111" {
		t.Fatalf("the job ended %s with %s (%v)", done.State, done.Result, err)
	}
	opaque, err := plain.GetJob(testContext(t), queue, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	info, ok := qm.EncodedPayloadInfo(opaque.ContentType)
	if !ok || strings.Join(info.Codecs, "+") != "gzip+aes-256-gcm" || info.KeyID != "k1" || info.Inner != qm.ContentTypeJSON {
		t.Fatalf("a client without codecs must see an encoded payload, not %s", opaque.ContentType)
	}
	if strings.Contains(string(opaque.Data), "4111") {
		t.Fatal("the server holds the card number in clear")
	}
	if info, ok := qm.EncodedPayloadInfo(opaque.ResultType); !ok || info.KeyID != "k1" {
		t.Fatalf("the result must be stored encoded, not as %s", opaque.ResultType)
	}
	// Plain payloads pass through a client with codecs.
	old := add(t, plain, queue, "plain", map[string]bool{"plain": true}, &qm.JobOptions{Delay: time.Hour})
	got, err := sealed.GetJob(testContext(t), queue, old.ID)
	if err != nil || string(got.Data) != `{"plain":true}` {
		t.Fatalf("a plain job read with codecs: %v %s", err, got.Data)
	}
}

func TestCodecsReadOldPayloadsAfterAKeyRotation(t *testing.T) {
	k1, k2 := randomKey(), randomKey()
	before := newClient(t, qm.WithCodecs(aesCodec(t, map[string][]byte{"k1": k1}, "")))
	after := newClient(t, qm.WithCodecs(aesCodec(t, map[string][]byte{"k1": k1, "k2": k2}, "k2")))
	retired := newClient(t, qm.WithCodecs(aesCodec(t, map[string][]byte{"k2": k2}, "")))
	plain := newClient(t, qm.WithCodecs())
	queue := newQueue(t, before, nil)
	old := add(t, before, queue, "old", map[string]int{"v": 1}, &qm.JobOptions{Delay: time.Hour})
	fresh := add(t, after, queue, "new", map[string]int{"v": 2}, &qm.JobOptions{Delay: time.Hour})
	if got, err := after.GetJob(testContext(t), queue, old.ID); err != nil || string(got.Data) != `{"v":1}` {
		t.Fatalf("a k1 job after the rotation: %v", err)
	}
	stored, _ := plain.GetJob(testContext(t), queue, fresh.ID)
	if info, ok := qm.EncodedPayloadInfo(stored.ContentType); !ok || info.KeyID != "k2" {
		t.Fatalf("a new job must be under k2: %s", stored.ContentType)
	}
	_, err := retired.GetJob(testContext(t), queue, old.ID)
	if !errors.Is(err, qm.ErrPayloadCodec) || !strings.Contains(err.Error(), "key id 'k1', which this client does not hold") {
		t.Fatalf("a k1 job once k1 is dropped: %v", err)
	}
}

func TestCodecsWorkerFailsAJobItCannotDecodeForGood(t *testing.T) {
	sealed := newClient(t, qm.WithCodecs(aesCodec(t, map[string][]byte{"k1": randomKey()}, "")))
	other := newClient(t, qm.WithCodecs(aesCodec(t, map[string][]byte{"k2": randomKey()}, "")))
	queue := newQueue(t, sealed, nil)
	var ran atomic.Int32
	startWorker(t, other, qm.WorkerConfig{Handlers: map[string]qm.Handler{queue: func(context.Context, *qm.Job) (any, error) {
		ran.Add(1)
		return nil, nil
	}}})
	job := add(t, sealed, queue, "w", map[string]int{"x": 1}, &qm.JobOptions{Attempts: 3})
	done := waitFinished(t, sealed, queue, job.ID)
	if done.State != qm.StateFailed || done.AttemptsMade != 1 || ran.Load() != 0 {
		t.Fatalf("the job ended %s after %d attempts (%d runs), want failed after 1 and none", done.State, done.AttemptsMade, ran.Load())
	}
	if !strings.HasPrefix(done.FailedReason, "cannot decode the job's payload: the payload is encrypted under key id 'k1'") {
		t.Fatalf("failed reason %q must say why, naming the key", done.FailedReason)
	}
}

func TestCodecsRefuseResultConditions(t *testing.T) {
	sealed := newClient(t, qm.WithCodecs(aesCodec(t, map[string][]byte{"k1": randomKey()}, "")))
	queue := newQueue(t, sealed, nil)
	flow := func(cond qm.StepCondition) qm.Workflow {
		return qm.Workflow{Name: "wf", Steps: []qm.WorkflowStep{{Key: "a", Queue: queue, Name: "a",
			OnSuccess: []qm.WorkflowStep{{Key: "b", Queue: queue, Name: "b", RunIf: []qm.StepCondition{cond}}}}}}
	}
	_, _, err := sealed.ExecuteWorkflow(testContext(t), flow(qm.When("a", "ok", "==", true)), "")
	if err == nil || !strings.Contains(err.Error(), "step 'b': RunIf on a result cannot work with payload codecs") {
		t.Fatalf("a result condition with codecs: %v", err)
	}
	if _, _, err := sealed.ExecuteWorkflow(testContext(t), flow(qm.WhenError("a", "contains", "x")), ""); err != nil {
		t.Fatalf("an error condition reads no payload: %v", err)
	}
}

func TestCodecsDecodeADeadLetterCopy(t *testing.T) {
	sealed := newClient(t, qm.WithCodecs(aesCodec(t, map[string][]byte{"k1": randomKey()}, "")))
	plain := newClient(t, qm.WithCodecs())
	ctx := testContext(t)
	dlq := newQueue(t, sealed, nil)
	queue := dlq + "-src"
	if _, _, err := sealed.RegisterQueue(ctx, queue, &qm.QueueConfig{DeadLetterQueue: dlq}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = sealed.ObliterateQueue(context.Background(), queue, true) })
	startWorker(t, sealed, qm.WorkerConfig{Handlers: map[string]qm.Handler{queue: func(context.Context, *qm.Job) (any, error) {
		return nil, errors.New("no charge")
	}}})
	job := add(t, sealed, queue, "charge", map[string]int{"order": 7}, nil)
	if done := waitFinished(t, sealed, queue, job.ID); done.State != qm.StateFailed {
		t.Fatalf("the job ended %s", done.State)
	}
	find := func(c *qm.Client) *qm.DeadLetter {
		for deadline := time.Now().Add(wait); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			page, err := c.ListDeadLetters(ctx, dlq, 0, 100, "")
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range page.DeadLetters {
				if d.OriginalJobID == job.ID {
					return d
				}
			}
		}
		t.Fatal("no dead-letter copy")
		return nil
	}
	if d := find(sealed); string(d.OriginalData) != `{"order":7}` || d.OriginalContentType != qm.ContentTypeJSON {
		t.Fatalf("with the codecs the copy must read as the original: %s (%s)", d.OriginalData, d.OriginalContentType)
	}
	if d := find(plain); !strings.Contains(d.OriginalContentType, "kid=k1") {
		t.Fatalf("without them the copy stays encoded: %s", d.OriginalContentType)
	}
}

func TestCodecsDecodeEveryReadOfADeadLetterCopy(t *testing.T) {
	sealed := newClient(t, qm.WithCodecs(aesCodec(t, map[string][]byte{"k1": randomKey()}, "")))
	plain := newClient(t, qm.WithCodecs())
	ctx := testContext(t)
	dlq := newQueue(t, sealed, nil)
	queue := dlq + "-src"
	if _, _, err := sealed.RegisterQueue(ctx, queue, &qm.QueueConfig{DeadLetterQueue: dlq}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = sealed.ObliterateQueue(context.Background(), queue, true) })
	startWorker(t, sealed, qm.WorkerConfig{Handlers: map[string]qm.Handler{queue: func(context.Context, *qm.Job) (any, error) {
		return nil, errors.New("declined")
	}}})
	job := add(t, sealed, queue, "charge", map[string]int{"order": 8}, nil)
	blob := add(t, sealed, queue, "blob", []byte{0, 1, 255}, nil)
	copyID, blobID := queue+":"+job.ID, queue+":"+blob.ID
	// The copies are written by the hand-off just after the failures: wait for both to be there.
	for deadline := time.Now().Add(wait); ; time.Sleep(20 * time.Millisecond) {
		_, errJob := sealed.GetJob(ctx, dlq, copyID)
		_, errBlob := sealed.GetJob(ctx, dlq, blobID)
		if errJob == nil && errBlob == nil {
			break
		}
		if !errors.Is(errJob, qm.ErrNotFound) && errJob != nil || !errors.Is(errBlob, qm.ErrNotFound) && errBlob != nil ||
			time.Now().After(deadline) {
			t.Fatalf("no dead-letter copies: %v, %v", errJob, errBlob)
		}
	}
	decoded := func(how string, j *qm.Job, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", how, err)
		}
		var copied struct {
			Data        json.RawMessage `json:"original_data"`
			ContentType string          `json:"original_content_type"`
			JobID       string          `json:"original_job_id"`
		}
		if err := j.Decode(&copied); err != nil {
			t.Fatalf("%s: %v", how, err)
		}
		if string(copied.Data) != `{"order":8}` || copied.ContentType != qm.ContentTypeJSON || copied.JobID != job.ID {
			t.Fatalf("%s: the copy must read decoded: %s", how, j.Data)
		}
	}
	got, err := sealed.GetJob(ctx, dlq, copyID)
	decoded("GetJob", got, err)
	page, err := sealed.ListJobsMatching(ctx, dlq, qm.StateWaiting, qm.JobFilter{Name: "charge"}, 100, "")
	if err != nil || len(page.Jobs) != 1 {
		t.Fatalf("the search found %v (%v)", page, err)
	}
	decoded("ListJobsMatching", page.Jobs[0], nil)
	got, err = sealed.CancelJob(ctx, dlq, copyID, "")
	decoded("CancelJob", got, err)
	got, err = sealed.WaitForJob(ctx, dlq, copyID)
	decoded("WaitForJob", got, err)
	got, err = sealed.RetryJob(ctx, dlq, copyID)
	decoded("RetryJob", got, err)
	// Bytes come back as base64 of the plain bytes, under their own content type.
	got, err = sealed.GetJob(ctx, dlq, blobID)
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		Data        []byte `json:"original_data"`
		ContentType string `json:"original_content_type"`
	}
	if err := got.Decode(&raw); err != nil || string(raw.Data) != "\x00\x01\xff" || raw.ContentType != qm.ContentTypeBytes {
		t.Fatalf("the bytes' copy must read decoded: %s (%v)", got.Data, err)
	}
	// Without the keys the copy is as the server keeps it: the original still encoded.
	if got, err = plain.GetJob(ctx, dlq, copyID); err != nil || !strings.Contains(string(got.Data), "kid=k1") {
		t.Fatalf("without the keys the copy stays encoded: %v (%v)", got, err)
	}
}

// Set by tests/test_client_go.py, with QM_CODEC_KEYS: the server, and the queue and job the Python client
// encrypted (TestCodecsWorkerRunsAPythonJob) or the queue to add to for the Python worker.
const (
	codecAddressEnv = "QM_TEST_CODEC_ADDRESS"
	codecPyQueueEnv = "QM_TEST_CODEC_PY_QUEUE"
	codecPyJobEnv   = "QM_TEST_CODEC_PY_JOB"
	codecGoQueueEnv = "QM_TEST_CODEC_GO_QUEUE"
)

// TestCodecsWorkerRunsAPythonJob runs a job the Python client encrypted and answers with an encrypted
// result, the keys from QM_CODEC_KEYS. Run only by tests/test_client_go.py.
func TestCodecsWorkerRunsAPythonJob(t *testing.T) {
	address, queue := os.Getenv(codecAddressEnv), os.Getenv(codecPyQueueEnv)
	if address == "" || queue == "" {
		t.Skip("run by tests/test_client_go.py, which adds the job with the Python client")
	}
	c := dial(t, address) // its codecs from QM_CODEC_KEYS
	seen := make(chan json.RawMessage, 1)
	startWorker(t, c, qm.WorkerConfig{Handlers: map[string]qm.Handler{queue: func(_ context.Context, job *qm.Job) (any, error) {
		seen <- json.RawMessage(job.Data)
		return map[string]any{"from": "go", "echo": json.RawMessage(job.Data)}, nil
	}}})
	if got := receive(t, seen, "the Python job"); string(got) != `{"from":"python","secret":"s3cret"}` {
		t.Fatalf("the Go worker read %s", got)
	}
	done := waitFinished(t, c, queue, os.Getenv(codecPyJobEnv))
	if done.State != qm.StateCompleted {
		t.Fatalf("the job ended %s: %s", done.State, done.FailedReason)
	}
}

// TestCodecsAddForAPythonWorker adds an encrypted job (keys from QM_CODEC_KEYS) and says "GO-CODEC {job id}"
// on stdout for the Python worker to run. Run only by tests/test_client_go.py.
func TestCodecsAddForAPythonWorker(t *testing.T) {
	address, queue := os.Getenv(codecAddressEnv), os.Getenv(codecGoQueueEnv)
	if address == "" || queue == "" {
		t.Skip("run by tests/test_client_go.py, which runs the job in a Python worker")
	}
	job := add(t, dial(t, address), queue, "from-go", map[string]string{"from": "go", "secret": "s3cret"}, nil)
	_, _ = os.Stdout.WriteString("GO-CODEC " + job.ID + "\n")
}

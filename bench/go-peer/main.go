// paysaga-go-peer: the Go SDK's worker for a synthetic saga of paysaga's
// shape, so `make perf` can set what paysaga's Rust worker and its saga cost
// the Temporal server beside what the Go SDK costs for the same history.
//
// The saga mirrors PaymentWorkflow's recorded history event for event (see
// worker/tests/histories/v6-succeeded.json): a version marker, the ledger's
// record, validate and debit and the payer's notification as local
// activities, the fraud check as a child workflow scoring in a local
// activity, three progress memo upserts, the charge as an activity, and the
// gateway's confirmation as a signal raced with a timer. The activities do
// no work beyond that shape; the charge asks for the confirmation signal
// 200 ms later, as paysaga's gateway simulator calls back.
//
// Usage: paysaga-go-peer --address 127.0.0.1:7233 [--namespace default]
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
)

// Names the harness starts and counts by.
const (
	PaymentWorkflowName = "SyntheticPaymentWorkflow"
	FraudWorkflowName   = "SyntheticFraudCheckWorkflow"
	ConfirmationSignal  = "gatewayCallback"
	ProgressMemo        = "paysagaProgress"
	// How long after the charge the confirmation arrives (the simulator's default).
	ConfirmationDelay = 200 * time.Millisecond
)

type PaymentInput struct {
	PaymentID               string `json:"paymentId"`
	Amount                  int64  `json:"amount"`
	ConfirmationTimeoutSecs int64  `json:"confirmationTimeoutSecs"`
	FraudTaskQueue          string `json:"fraudTaskQueue"`
}

type PaymentOutcome struct {
	Phase    string `json:"phase"`
	ChargeID string `json:"chargeId,omitempty"`
}

type Verdict struct {
	Score int `json:"score"`
}

type Confirmation struct {
	ChargeID string `json:"chargeId"`
	Captured bool   `json:"captured"`
}

// Activities: the shape's steps, each returning at once.
type Activities struct {
	client client.Client
}

func (a *Activities) RecordOutcome(_ context.Context, id string, phase string) error { return nil }
func (a *Activities) ValidateAccount(_ context.Context, in PaymentInput) error       { return nil }
func (a *Activities) Debit(_ context.Context, in PaymentInput) error                 { return nil }
func (a *Activities) Notify(_ context.Context, id string) error                      { return nil }
func (a *Activities) ScoreFraud(_ context.Context, in PaymentInput) (Verdict, error) {
	return Verdict{Score: int(in.Amount % 50)}, nil
}

// Charge accepts the charge and has the "gateway" confirm it later, through
// a signal to the payment's workflow.
func (a *Activities) Charge(ctx context.Context, in PaymentInput) (string, error) {
	info := activity.GetInfo(ctx)
	chargeID := "ch-" + in.PaymentID
	workflowID := info.WorkflowExecution.ID
	go func() {
		time.Sleep(ConfirmationDelay)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := a.client.SignalWorkflow(ctx, workflowID, "", ConfirmationSignal,
			Confirmation{ChargeID: chargeID, Captured: true})
		if err != nil {
			slog.Warn("confirmation signal failed", "workflow", workflowID, "error", err)
		}
	}()
	return chargeID, nil
}

func localOptions(ctx workflow.Context) workflow.Context {
	return workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
		StartToCloseTimeout: 10 * time.Second,
		RetryPolicy:         &temporal.RetryPolicy{InitialInterval: time.Second, MaximumAttempts: 5},
	})
}

func progress(ctx workflow.Context, step string) error {
	return workflow.UpsertMemo(ctx, map[string]interface{}{ProgressMemo: step})
}

// PaymentWorkflow: paysaga's saga's happy path, event for event.
func PaymentWorkflow(ctx workflow.Context, in PaymentInput) (PaymentOutcome, error) {
	var a *Activities
	workflow.GetVersion(ctx, "local-activities", workflow.DefaultVersion, 1)
	local := localOptions(ctx)
	if err := workflow.ExecuteLocalActivity(local, a.RecordOutcome, in.PaymentID, "Processing").Get(ctx, nil); err != nil {
		return PaymentOutcome{}, err
	}
	if err := workflow.ExecuteLocalActivity(local, a.ValidateAccount, in).Get(ctx, nil); err != nil {
		return PaymentOutcome{}, err
	}
	if err := progress(ctx, "FraudCheck"); err != nil {
		return PaymentOutcome{}, err
	}
	child := workflow.ExecuteChildWorkflow(workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
		WorkflowID: in.PaymentID + "-fraud",
		TaskQueue:  in.FraudTaskQueue,
	}), FraudWorkflowName, in)
	if err := child.GetChildWorkflowExecution().Get(ctx, nil); err != nil {
		return PaymentOutcome{}, err
	}
	if err := workflow.ExecuteLocalActivity(local, a.Debit, in).Get(ctx, nil); err != nil {
		return PaymentOutcome{}, err
	}
	var verdict Verdict
	if err := child.Get(ctx, &verdict); err != nil {
		return PaymentOutcome{}, err
	}
	if err := progress(ctx, "Charge"); err != nil {
		return PaymentOutcome{}, err
	}
	var chargeID string
	remote := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 30 * time.Second,
		RetryPolicy:         &temporal.RetryPolicy{InitialInterval: time.Second, MaximumAttempts: 5},
	})
	if err := workflow.ExecuteActivity(remote, "charge", in).Get(ctx, &chargeID); err != nil {
		return PaymentOutcome{}, err
	}
	if err := progress(ctx, "AwaitingConfirmation"); err != nil {
		return PaymentOutcome{}, err
	}
	timerCtx, cancelTimer := workflow.WithCancel(ctx)
	timer := workflow.NewTimer(timerCtx, time.Duration(in.ConfirmationTimeoutSecs)*time.Second)
	var confirmation Confirmation
	confirmed := false
	workflow.NewSelector(ctx).
		AddReceive(workflow.GetSignalChannel(ctx, ConfirmationSignal), func(c workflow.ReceiveChannel, _ bool) {
			c.Receive(ctx, &confirmation)
			confirmed = true
		}).
		AddFuture(timer, func(workflow.Future) {}).
		Select(ctx)
	phase := "Failed"
	if confirmed && confirmation.Captured {
		cancelTimer()
		phase = "Succeeded"
	}
	if err := workflow.ExecuteLocalActivity(local, a.Notify, in.PaymentID).Get(ctx, nil); err != nil {
		return PaymentOutcome{}, err
	}
	if err := workflow.ExecuteLocalActivity(local, a.RecordOutcome, in.PaymentID, phase).Get(ctx, nil); err != nil {
		return PaymentOutcome{}, err
	}
	return PaymentOutcome{Phase: phase, ChargeID: chargeID}, nil
}

// FraudCheckWorkflow: paysaga's fraud child, a version marker and one local activity.
func FraudCheckWorkflow(ctx workflow.Context, in PaymentInput) (Verdict, error) {
	var a *Activities
	workflow.GetVersion(ctx, "local-fraud-score", workflow.DefaultVersion, 1)
	var v Verdict
	err := workflow.ExecuteLocalActivity(localOptions(ctx), a.ScoreFraud, in).Get(ctx, &v)
	return v, err
}

func main() {
	address := flag.String("address", "127.0.0.1:7233", "the Temporal frontend, host:port")
	namespace := flag.String("namespace", "default", "the Temporal namespace")
	taskQueue := flag.String("task-queue", "paysaga-go-peer", "the payments' task queue")
	fraudQueue := flag.String("fraud-task-queue", "paysaga-go-peer-fraud", "the fraud checks' task queue")
	flag.Parse()

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	slog.SetDefault(logger)
	c, err := client.Dial(client.Options{
		HostPort:  *address,
		Namespace: *namespace,
		Logger:    log.NewStructuredLogger(logger),
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "paysaga-go-peer: connecting to Temporal at %s: %v\n", *address, err)
		os.Exit(1)
	}
	defer c.Close()

	acts := &Activities{client: c}
	payments := worker.New(c, *taskQueue, worker.Options{})
	payments.RegisterWorkflowWithOptions(PaymentWorkflow, workflow.RegisterOptions{Name: PaymentWorkflowName})
	payments.RegisterActivityWithOptions(acts.Charge, activity.RegisterOptions{Name: "charge"})
	fraud := worker.New(c, *fraudQueue, worker.Options{})
	fraud.RegisterWorkflowWithOptions(FraudCheckWorkflow, workflow.RegisterOptions{Name: FraudWorkflowName})
	for _, w := range []worker.Worker{payments, fraud} {
		if err := w.Start(); err != nil {
			fmt.Fprintf(os.Stderr, "paysaga-go-peer: starting a worker: %v\n", err)
			os.Exit(1)
		}
	}
	fmt.Fprintf(os.Stderr, "paysaga-go-peer: polling %s and %s on %s\n", *taskQueue, *fraudQueue, *address)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	fraud.Stop()
	payments.Stop()
}

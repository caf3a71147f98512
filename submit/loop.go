package submit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/batchctl/batchctl/jsonl"
)

// Defaults of the stream's timing.
const (
	// WriteThroughInterval: every record a stream's run has read is written through to its spool file (and the
	// disk) within this long, so a run killed with SIGKILL loses none read before then: the next run seals and
	// submits them.
	WriteThroughInterval = time.Second
	// DefaultShutdownTimeout is how long a stream's run that was asked to stop (SIGTERM, SIGINT) keeps creating
	// the batches of what it read before it leaves the rest for `submit --resume`.
	DefaultShutdownTimeout = 30 * time.Second
	// maxBacklog is how many sealed batch files of a stream may wait for their batch before reading pauses.
	maxBacklog = 2
	// drainIdle: once a stream's run stops, the lines already read are taken until none comes for this long (the
	// reader may be blocked on its input for good).
	drainIdle = 200 * time.Millisecond
)

// ErrInterrupted means a stream's run stopped before every batch file it sealed became a batch; the journals keep
// them for `submit --resume`.
var ErrInterrupted = errors.New("interrupted")

// spoolRun is one run over the inputs: the lines read go into the spooler, and sealed batch files go on to be
// batches: at the end for a bounded input, checked whole first; at once, by the deliverer, for a stream.
type spoolRun struct {
	r       *run
	dir     string
	bounded bool
	sp      *spooler
	in      *intents
	dl      *deliverer // streams only
	open    *journal   // a stream's open batch file's journal

	sealed  []*spooledPart // of a bounded input, submitted once all of it is valid
	badErrs []error
	req     request

	timer  *time.Timer
	timerC <-chan time.Time
}

func (r *run) submit(ctx context.Context) error {
	key, err := runKey(r.opts)
	if err != nil {
		return err
	}
	dir := filepath.Join(r.opts.SpoolDir, key)
	if r.opts.DryRun {
		dir += ".dry-run"
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("clear the last dry run: %w", err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create run dir: %w", err)
	}
	lock, err := lockOwnRunDir(ctx, dir)
	if err != nil {
		return err
	}
	defer lock.Unlock()
	js, err := prepareDir(dir)
	if err != nil {
		return err
	}
	first, err := nextPart(dir, js)
	if err != nil {
		return err
	}
	bounded, err := r.bounded()
	if err != nil {
		return err
	}
	b, err := newBuilder(r.opts)
	if err != nil {
		return err
	}
	s := &spoolRun{r: r, dir: dir, bounded: bounded, sp: newSpooler(dir, r.opts, first), in: newIntents(r, js),
		timer: time.NewTimer(time.Hour)}
	s.timer.Stop()
	defer s.sp.discard()
	r.log.Info("submitting", "run_dir", dir, "bounded", bounded, "dry_run", r.opts.DryRun)
	if bounded || r.opts.DryRun {
		return s.runBounded(ctx, b)
	}
	return s.runStream(ctx, b)
}

// startReader starts reading on its own goroutine; close stop to end the reading, abort when nothing is taken any
// more.
func (s *spoolRun) startReader(b *builder, gate *backlog) (lines <-chan *chunk, free chan<- *chunk, stop, abort chan struct{}) {
	out, back := make(chan *chunk, 4), make(chan *chunk, 8)
	stop, abort = make(chan struct{}), make(chan struct{})
	go s.r.read(b, &reader{out: out, free: back, stop: stop, abort: abort, gate: gate})
	return out, back, stop, abort
}

// runBounded reads every input whole: any bad record (without --skip-invalid) fails the run before anything is
// uploaded. A dry run takes this path for a stream too, printing each batch file as it is sealed.
func (s *spoolRun) runBounded(ctx context.Context, b *builder) error {
	lines, free, _, abort := s.startReader(b, nil)
	defer close(abort)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.timerC:
			if err := s.flushPartial(ctx); err != nil {
				return err
			}
		case c, ok := <-lines:
			if !ok {
				return s.finishBounded(ctx)
			}
			if err := s.take(ctx, c); err != nil {
				return err
			}
			recycle(free, c)
		}
	}
}

func (s *spoolRun) finishBounded(ctx context.Context) error {
	p, err := s.sp.seal()
	if err != nil {
		return err
	}
	if err := s.sealedPart(ctx, p); err != nil {
		return err
	}
	for _, p := range s.sealed {
		if err := s.r.fitsQuota(ctx, p.Model, p.Part, p.Tokens); err != nil {
			s.badErrs = append(s.badErrs, fmt.Errorf("%w; nothing was uploaded", err))
			break
		}
	}
	if err := s.checkBudget(ctx); err != nil {
		s.badErrs = append(s.badErrs, err)
	}
	if len(s.badErrs) > 0 {
		for _, p := range s.sealed {
			p.remove()
		}
		return errors.Join(s.badErrs...)
	}
	for _, p := range s.sealed {
		j, _, err := s.r.intend(ctx, p, s.in)
		if err != nil {
			return err
		}
		if err := s.r.finish(ctx, j); err != nil {
			return err
		}
	}
	s.r.warnRejected()
	return nil
}

// runStream reads a stream: every record read is written through to the open batch file within
// WriteThroughInterval, and each sealed batch file is created as a batch by the deliverer while reading goes on.
// Whatever stops the run (the end of the input, a signal, a bad record, an API failure), the records read go into
// a sealed batch file whose intent is journaled; the deliverer then has ShutdownTimeout, after a signal, to create
// their batches, and leaves what it could not for `submit --resume`.
func (s *spoolRun) runStream(ctx context.Context, b *builder) error {
	s.sp.opened = s.openJournal
	gate := newBacklog(maxBacklog)
	s.dl = newDeliverer(s.r, gate)
	dctx, cancelDelivery := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelDelivery()
	// After a signal, the batches of what was read get ShutdownTimeout to be created.
	stopGrace := context.AfterFunc(ctx, func() { time.AfterFunc(s.r.opts.ShutdownTimeout, cancelDelivery) })
	defer stopGrace()
	go s.dl.run(dctx)

	lines, free, stop, abort := s.startReader(b, gate)
	defer close(abort)
	flush := time.NewTicker(WriteThroughInterval)
	defer flush.Stop()

	var stopErr error // why reading stopped before the end of the input
	drain := true     // take the lines read before the stop
loop:
	for {
		select {
		case <-ctx.Done():
			stopErr = ctx.Err()
			break loop
		case <-s.dl.failed:
			stopErr = s.dl.err
			break loop
		case <-flush.C:
			if err := s.sp.flush(); err != nil {
				stopErr, drain = err, false
				break loop
			}
		case <-s.timerC:
			if err := s.flushPartial(ctx); err != nil {
				stopErr, drain = err, false
				break loop
			}
		case c, ok := <-lines:
			if !ok {
				drain = false
				break loop
			}
			if err := s.take(ctx, c); err != nil {
				stopErr, drain = err, false
				break loop
			}
			recycle(free, c)
		}
	}
	close(stop)
	// What was read is spooled and sealed whatever stopped the run: under the delivery's context, which a signal
	// ends only after ShutdownTimeout.
	if drain {
		if err := s.drain(dctx, lines); err != nil {
			stopErr = errors.Join(stopErr, err)
		}
	}
	p, err := s.sp.seal()
	if err == nil {
		err = s.sealedPart(dctx, p)
	}
	s.dl.close()
	<-s.dl.done
	if err != nil {
		return errors.Join(stopErr, err)
	}
	s.r.warnRejected()
	left := s.dl.left()
	switch {
	case left > 0 && s.dl.err != nil && !errors.Is(s.dl.err, context.Canceled):
		return fmt.Errorf("%w (%d batch files are left in %s for `batchctl submit --resume`)", s.dl.err, left, s.dir)
	case left > 0:
		return fmt.Errorf("%w: %d batch files are left in %s for `batchctl submit --resume`", ErrInterrupted, left, s.dir)
	case errors.Is(stopErr, context.Canceled):
		s.r.log.Info("stopped: every record read is in a batch", "records", s.r.opts.Progress.Records.Load())
		return nil
	}
	return stopErr
}

// drain takes the chunks the reader handed over before it stopped, until it closes its channel or none comes for
// drainIdle (it may wait on its input for good).
func (s *spoolRun) drain(ctx context.Context, lines <-chan *chunk) error {
	idle := time.NewTimer(drainIdle)
	defer idle.Stop()
	for {
		select {
		case c, ok := <-lines:
			if !ok {
				return nil
			}
			if err := s.take(ctx, c); err != nil {
				return err
			}
			idle.Reset(drainIdle)
		case <-idle.C:
			return nil
		}
	}
}

func recycle(free chan<- *chunk, c *chunk) {
	select {
	case free <- c:
	default:
	}
}

// openJournal records a stream's new open batch file before anything is written to it, so a run that dies leaves
// a journal that tells the next run to seal it.
func (s *spoolRun) openJournal(part int, file, source, model string) error {
	j := s.r.newJournal(s.dir, part, newIntent(), source, model)
	j.State, j.SpoolFile = StateSpooling, file
	if s.r.opts.Pack > 0 {
		j.Pack, j.AnswerSchema = s.r.opts.Pack, s.r.opts.AnswerSchema // a leftover is sealed with its map
	}
	if err := j.save(); err != nil {
		return err
	}
	s.open = j
	return nil
}

// flushPartial seals the open batch file once the flush interval has passed.
func (s *spoolRun) flushPartial(ctx context.Context) error {
	s.timerC = nil
	p, err := s.sp.seal()
	if err != nil {
		return err
	}
	s.r.log.Debug("flush interval passed: submitting a partial batch")
	return s.sealedPart(ctx, p)
}

// sealedPart passes a sealed batch file on: kept for the end (bounded), printed (dry run), or journaled as pending
// and queued for its batch (stream).
func (s *spoolRun) sealedPart(ctx context.Context, p *spooledPart) error {
	if p == nil {
		return nil
	}
	s.timer.Stop()
	s.timerC = nil
	switch {
	case s.r.opts.DryRun:
		if err := s.r.dryRunLine(p); err != nil {
			return err
		}
		return s.r.spend(p.Model, p.Tokens, p.OutTokens)
	case s.bounded:
		s.sealed = append(s.sealed, p)
		return nil
	}
	j := s.open
	s.open = nil
	if !s.r.opts.Force {
		prior, err := s.in.lookup(ctx, p.SHA256)
		if err != nil {
			return err
		}
		if prior != nil {
			s.r.log.Info("batch file already submitted by an earlier run", "spool_file", prior.SpoolFile, "state", prior.State)
			p.remove()
			if err := removeJournal(j); err != nil {
				return err
			}
			s.dl.push(prior)
			return nil
		}
	}
	j.State, j.SpoolFile, j.SpoolSHA256, j.Requests, j.Bytes, j.Source = StatePending, filepath.Base(p.Path), p.SHA256, p.Requests, p.Bytes, p.Source
	j.Tokens, j.OutTokens = p.Tokens, p.OutTokens
	j.Metadata[MetaSpoolSHA256], j.Metadata[MetaSource] = p.SHA256, p.Source
	s.r.packJournal(j, p)
	if err := j.save(); err != nil {
		return err
	}
	s.in.add(j)
	if err := s.r.fitsQuota(ctx, j.Model, j.Part, j.Tokens); err != nil {
		return fmt.Errorf("%w; batch file %s stays in the spool", err, j.SpoolFile)
	}
	if err := s.r.spend(j.Model, j.Tokens, j.OutTokens); err != nil {
		return fmt.Errorf("%w; batch file %s stays in the spool for `batchctl submit --resume`", err, j.SpoolFile)
	}
	s.dl.push(j)
	return nil
}

// checkBudget adds up the estimates of a bounded input's new batch files (not those an earlier run submitted)
// against MaxCost, before anything is uploaded.
func (s *spoolRun) checkBudget(ctx context.Context) error {
	if s.r.opts.MaxCost <= 0 || s.r.opts.DryRun {
		return nil
	}
	for _, p := range s.sealed {
		if !s.r.opts.Force {
			prior, err := s.in.lookup(ctx, p.SHA256)
			if err != nil {
				return err
			}
			if prior != nil {
				continue
			}
		}
		if err := s.r.spend(p.Model, p.Tokens, p.OutTokens); err != nil {
			return fmt.Errorf("%w; nothing was uploaded", err)
		}
	}
	return nil
}

// take spools the lines of a chunk. A bad record fails a stream's run at once (the records before it are
// submitted, those after it are not), and a bounded input's once enough are collected.
func (s *spoolRun) take(ctx context.Context, c *chunk) error {
	for _, l := range c.lines {
		line := c.buf[l.start:l.end]
		if l.err != nil {
			if err := s.bad(line, l.err); err != nil {
				return err
			}
			continue
		}
		s.req = request{line: line, customID: l.customID, model: l.model, inputs: l.inputs, members: l.members}
		s.req.tokens, s.req.outTokens = s.r.opts.estimate(line[l.bodyOff : l.bodyOff+l.bodyLen])
		wasEmpty := s.sp.pending() == 0
		p, err := s.sp.add(l.name, l.num, &s.req)
		if derr := s.sealedPart(ctx, p); derr != nil {
			return derr
		}
		if err != nil {
			if _, ok := jsonl.AsRecordError(err); !ok {
				return err
			}
			if l.rawEnd > l.rawStart {
				line = c.buf[l.rawStart:l.rawEnd]
			}
			if err := s.bad(line, err); err != nil {
				return err
			}
			continue
		}
		if s.sp.full() {
			p, err := s.sp.seal()
			if err != nil {
				return err
			}
			if err := s.sealedPart(ctx, p); err != nil {
				return err
			}
			continue
		}
		if (wasEmpty || p != nil) && s.r.opts.FlushInterval > 0 && !s.bounded {
			s.timer.Reset(s.r.opts.FlushInterval)
			s.timerC = s.timer.C
		}
	}
	return c.err
}

// bad handles a bad record: to the rejects file with --skip-invalid, else the run's error (a stream's at once, a
// bounded input's once maxReportedErrors are collected or the input ends).
func (s *spoolRun) bad(line []byte, err error) error {
	re, _ := jsonl.AsRecordError(err)
	if s.r.opts.SkipInvalid {
		s.r.opts.Progress.Rejected.Add(1)
		return s.r.reject(re, line)
	}
	if !s.bounded {
		return re
	}
	s.badErrs = append(s.badErrs, re)
	if len(s.badErrs) >= maxReportedErrors {
		return errors.Join(s.badErrs...)
	}
	return nil
}

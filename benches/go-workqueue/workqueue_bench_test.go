// Package goworkqueue benchmarks client-go's util/workqueue with the same scenarios, key shape
// and counts as benches/queue.rs. benches/run-queue-bench.sh runs it once per round, beside the
// Rust side, and merges both; every benchmark reports the scenario's figure with b.ReportMetric
// under the unit the report uses.
//
// Every scenario runs in two configurations (sub-benchmarks):
//   - prod: as controller-runtime builds a controller's queue: a rate-limiting queue with
//     DefaultTypedControllerRateLimiter (5 ms·2ⁿ per item up to 1000 s, max'd with a 10 qps /
//     burst 100 bucket) and a Prometheus metrics provider with the workqueue_* families;
//   - bare: the plain queue (a delaying queue where delays are needed), no metrics.
//
// Micro benchmarks (Serial*, DedupHit, AddAfter*) use testing.B's own iteration count
// (-benchtime 1s); the scenarios do a fixed amount of work per run (-benchtime 1x).
package goworkqueue

import (
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/util/workqueue"
)

// keys returns n keys shaped like the operator's ("namespace/name"), built before measuring.
func keys(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("ns-%d/session-%d", i%100, i)
	}
	return out
}

// promProvider is controller-runtime's workqueue metrics provider (pkg/metrics/workqueue.go):
// the workqueue_* families on a registry, labelled by queue name, with the same buckets as the
// operator's own families.
type promProvider struct {
	depth, unfinished, longest *prometheus.GaugeVec
	adds, retries              *prometheus.CounterVec
	latency, work              *prometheus.HistogramVec
}

func newPromProvider() *promProvider {
	buckets := prometheus.ExponentialBuckets(10e-9, 10, 10)
	p := &promProvider{
		depth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "workqueue_depth", Help: "Current depth of workqueue"}, []string{"name"}),
		adds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "workqueue_adds_total", Help: "Total number of adds handled by workqueue"}, []string{"name"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "workqueue_queue_duration_seconds", Help: "How long in seconds an item stays in workqueue before being requested.",
			Buckets: buckets}, []string{"name"}),
		work: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "workqueue_work_duration_seconds", Help: "How long in seconds processing an item from workqueue takes.",
			Buckets: buckets}, []string{"name"}),
		unfinished: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "workqueue_unfinished_work_seconds", Help: "Seconds of work in progress."}, []string{"name"}),
		longest: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "workqueue_longest_running_processor_seconds", Help: "Seconds the longest running processor has been running."}, []string{"name"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "workqueue_retries_total", Help: "Total number of retries handled by workqueue"}, []string{"name"}),
	}
	prometheus.NewRegistry().MustRegister(p.depth, p.adds, p.latency, p.work, p.unfinished, p.longest, p.retries)
	return p
}

func (p *promProvider) NewDepthMetric(name string) workqueue.GaugeMetric {
	return p.depth.WithLabelValues(name)
}
func (p *promProvider) NewAddsMetric(name string) workqueue.CounterMetric {
	return p.adds.WithLabelValues(name)
}
func (p *promProvider) NewLatencyMetric(name string) workqueue.HistogramMetric {
	return p.latency.WithLabelValues(name)
}
func (p *promProvider) NewWorkDurationMetric(name string) workqueue.HistogramMetric {
	return p.work.WithLabelValues(name)
}
func (p *promProvider) NewUnfinishedWorkSecondsMetric(name string) workqueue.SettableGaugeMetric {
	return p.unfinished.WithLabelValues(name)
}
func (p *promProvider) NewLongestRunningProcessorSecondsMetric(name string) workqueue.SettableGaugeMetric {
	return p.longest.WithLabelValues(name)
}
func (p *promProvider) NewRetriesMetric(name string) workqueue.CounterMetric {
	return p.retries.WithLabelValues(name)
}

var provider = newPromProvider()

// queue is what the scenarios use: Add/Get/Done/AddAfter/AddRateLimited/Forget.
type queue = workqueue.TypedRateLimitingInterface[string]

// bareLimiter stands in for the bucket-less configuration: per-item backoff only.
func bareLimiter() workqueue.TypedRateLimiter[string] {
	return workqueue.NewTypedItemExponentialFailureRateLimiter[string](5*time.Millisecond, 1000*time.Second)
}

// newQueue builds the queue of a configuration; bare queues are the plain queue wrapped only
// for the delaying and rate-limiting calls (no metrics, no bucket).
func newQueue(prod bool) queue {
	cfg := workqueue.TypedRateLimitingQueueConfig[string]{}
	if prod {
		cfg.Name = "bench"
		cfg.MetricsProvider = provider
		return workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](), cfg)
	}
	return workqueue.NewTypedRateLimitingQueueWithConfig(bareLimiter(), cfg)
}

// basic is the queue of the Add/Get/Done scenarios: for bare, the plain queue itself.
func basic(prod bool) workqueue.TypedInterface[string] {
	if prod {
		return newQueue(true)
	}
	return workqueue.NewTyped[string]()
}

func configs(b *testing.B, f func(b *testing.B, prod bool)) {
	b.Run("prod", func(b *testing.B) { f(b, true) })
	b.Run("bare", func(b *testing.B) { f(b, false) })
}

func BenchmarkSerialAddGetDone(b *testing.B) {
	configs(b, func(b *testing.B, prod bool) {
		q := basic(prod)
		defer q.ShutDown()
		ks := keys(1024)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			q.Add(ks[i&1023])
			item, _ := q.Get()
			q.Done(item)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/item")
	})
}

func BenchmarkDedupHit(b *testing.B) {
	configs(b, func(b *testing.B, prod bool) {
		q := basic(prod)
		defer q.ShutDown()
		k := keys(1)[0]
		q.Add(k)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			q.Add(k)
		}
	})
}

// BenchmarkAddAfterDelayed: AddAfter on keys that already wait for an earlier deadline.
func BenchmarkAddAfterDelayed(b *testing.B) {
	configs(b, func(b *testing.B, prod bool) {
		q := newQueue(prod)
		defer q.ShutDown()
		ks := keys(100_000)
		for _, k := range ks {
			q.AddAfter(k, time.Hour)
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			q.AddAfter(ks[i%len(ks)], time.Hour+time.Duration(i))
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/op")
	})
}

// BenchmarkAddAfterFresh: AddAfter of keys the queue does not hold (a new timer each); a new
// queue every 100k keys, built and torn down off the clock.
func BenchmarkAddAfterFresh(b *testing.B) {
	configs(b, func(b *testing.B, prod bool) {
		ks := keys(100_000)
		var q queue
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if i%len(ks) == 0 {
				b.StopTimer()
				if q != nil {
					q.ShutDown()
				}
				q = newQueue(prod)
				b.StartTimer()
			}
			q.AddAfter(ks[i%len(ks)], time.Hour+time.Duration(i))
		}
		b.StopTimer()
		q.ShutDown()
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/op")
	})
}

// drainRepeats: drains of 100k keys per run, their rate over the summed drain time.
const drainRepeats = 10

func drain(b *testing.B, workers int) {
	configs(b, func(b *testing.B, prod bool) {
		ks := keys(100_000)
		var total time.Duration
		for i := 0; i < b.N*drainRepeats; i++ {
			q := basic(prod)
			for _, k := range ks {
				q.Add(k)
			}
			q.ShutDown() // Get keeps returning queued items, then reports shutdown
			start := time.Now()
			var wg sync.WaitGroup
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						item, shutdown := q.Get()
						if shutdown {
							return
						}
						q.Done(item)
					}
				}()
			}
			wg.Wait()
			total += time.Since(start)
		}
		b.ReportMetric(float64(len(ks)*b.N*drainRepeats)/total.Seconds(), "items/s")
	})
}

func BenchmarkDrain100k2Workers(b *testing.B) { drain(b, 2) }
func BenchmarkDrain100k4Workers(b *testing.B) { drain(b, 4) }

// BenchmarkAddStorm: 2 producers add flat out over 10k keys for 1 s while 2 workers Get/Done.
func BenchmarkAddStorm(b *testing.B) { addStorm(b, 2) }

// BenchmarkAddStormManyProducers: the same with twice as many producers as GOMAXPROCS (the Rust
// side: as many producer threads as twice the cores), so the producers outnumber the cores.
func BenchmarkAddStormManyProducers(b *testing.B) { addStorm(b, 2*runtime.GOMAXPROCS(0)) }

func addStorm(b *testing.B, producers int) {
	configs(b, func(b *testing.B, prod bool) {
		ks := keys(10_000)
		var rate float64
		for i := 0; i < b.N; i++ {
			q := basic(prod)
			var stop atomic.Bool
			var done atomic.Int64
			var wg sync.WaitGroup
			for p := 0; p < producers; p++ {
				wg.Add(1)
				go func(p int) {
					defer wg.Done()
					for j := p; !stop.Load(); j++ {
						q.Add(ks[j%len(ks)])
					}
				}(p)
			}
			for w := 0; w < 2; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						item, shutdown := q.Get()
						if shutdown {
							return
						}
						done.Add(1)
						q.Done(item)
					}
				}()
			}
			time.Sleep(time.Second)
			n := done.Load()
			stop.Store(true)
			q.ShutDown()
			wg.Wait()
			rate = float64(n)
		}
		b.ReportMetric(rate, "items/s")
	})
}

func heapAfterGC() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func BenchmarkMemoryPerReadyKey(b *testing.B) {
	configs(b, func(b *testing.B, prod bool) {
		ks := keys(100_000)
		var per float64
		for i := 0; i < b.N; i++ {
			before := heapAfterGC()
			q := basic(prod)
			for _, k := range ks {
				q.Add(k)
			}
			after := heapAfterGC()
			per = float64(after-before) / float64(len(ks))
			runtime.KeepAlive(q)
			q.ShutDown()
		}
		b.ReportMetric(per, "B/key")
	})
}

func BenchmarkMemoryPerDelayedKey(b *testing.B) {
	configs(b, func(b *testing.B, prod bool) {
		ks := keys(100_000)
		var per float64
		for i := 0; i < b.N; i++ {
			before := heapAfterGC()
			q := newQueue(prod)
			for _, k := range ks {
				q.AddAfter(k, time.Hour)
			}
			time.Sleep(200 * time.Millisecond) // let the feed goroutine move everything into its heap
			after := heapAfterGC()
			per = float64(after-before) / float64(len(ks))
			runtime.KeepAlive(q)
			q.ShutDown()
		}
		b.ReportMetric(per, "B/key")
	})
}

// keyIndex is the index i of a key made by keys() ("ns-…/session-i").
func keyIndex(k string) int {
	i := 0
	for j := strings.LastIndexByte(k, '-') + 1; j < len(k); j++ {
		i = i*10 + int(k[j]-'0')
	}
	return i
}

// BenchmarkTimerLateness: 10k keys due uniformly within 100 ms, added while 2 workers already
// wait; p99 of (get - due), where a key's due time is its AddAfter call plus its delay (same in
// benches/queue.rs).
func BenchmarkTimerLateness(b *testing.B) {
	configs(b, func(b *testing.B, prod bool) {
		const n = 10_000
		ks := keys(n)
		delay := func(j int) time.Duration { return time.Duration(j) * 100 * time.Millisecond / n }
		var p99 float64
		for i := 0; i < b.N; i++ {
			q := newQueue(prod)
			base := time.Now()
			added := make([]atomic.Int64, n) // ns from base to each key's AddAfter call
			late := make([]float64, 0, n)
			var mu sync.Mutex
			var wg sync.WaitGroup
			for w := 0; w < 2; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						item, shutdown := q.Get()
						if shutdown {
							return
						}
						now := time.Now()
						j := keyIndex(item)
						due := base.Add(time.Duration(added[j].Load()) + delay(j))
						l := now.Sub(due).Seconds() * 1000
						q.Done(item)
						mu.Lock()
						late = append(late, max(l, 0))
						full := len(late) == n
						mu.Unlock()
						if full {
							q.ShutDown()
						}
					}
				}()
			}
			runtime.Gosched()
			for j, k := range ks {
				added[j].Store(int64(time.Since(base)))
				q.AddAfter(k, delay(j))
			}
			wg.Wait()
			sort.Float64s(late)
			p99 = late[len(late)*99/100]
		}
		b.ReportMetric(p99, "ms_p99")
	})
}

// cpuTime is the CPU time (user + system) this process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// idleCPU: 2 workers wait in Get while 10k keys are delayed by an hour and, with stream, a key is
// re-added with a 10 ms delay every 10 ms (100 timers a second): the CPU the process uses over
// 1 s, in % of one core (same in benches/queue.rs).
func idleCPU(b *testing.B, stream bool) {
	configs(b, func(b *testing.B, prod bool) {
		ks := keys(10_000)
		hot := keys(200_000)[199_900:]
		var pct float64
		for i := 0; i < b.N; i++ {
			q := newQueue(prod)
			for _, k := range ks {
				q.AddAfter(k, time.Hour)
			}
			var wg sync.WaitGroup
			for w := 0; w < 2; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						item, shutdown := q.Get()
						if shutdown {
							return
						}
						q.Done(item)
					}
				}()
			}
			stop := make(chan struct{})
			if stream {
				wg.Add(1)
				go func() {
					defer wg.Done()
					tick := time.NewTicker(10 * time.Millisecond)
					defer tick.Stop()
					for j := 0; ; j++ {
						select {
						case <-stop:
							return
						case <-tick.C:
							q.AddAfter(hot[j%len(hot)], 10*time.Millisecond)
						}
					}
				}()
			}
			time.Sleep(200 * time.Millisecond)
			cpu, wall := cpuTime(), time.Now()
			time.Sleep(time.Second)
			pct = float64(cpuTime()-cpu) / float64(time.Since(wall)) * 100
			close(stop)
			q.ShutDown()
			wg.Wait()
		}
		b.ReportMetric(pct, "pct_core")
	})
}

func BenchmarkIdleCPUDelayed(b *testing.B)     { idleCPU(b, false) }
func BenchmarkIdleCPUTimerStream(b *testing.B) { idleCPU(b, true) }

// BenchmarkFailureTail: 10k simultaneous failures (AddRateLimited of 10k keys at once). The
// rate-limiting queue is AddAfter(item, limiter.When(item)) and its delaying queue releases an
// item at its add time plus that delay, so the figures come from the delays the configuration's
// limiter assigns (waiting them out would take ~16 minutes): the wait of the last retry and the
// most retries released within any 1 s.
func BenchmarkFailureTail(b *testing.B) {
	configs(b, func(b *testing.B, prod bool) {
		ks := keys(10_000)
		var tail time.Duration
		var peak int
		for i := 0; i < b.N; i++ {
			rl := workqueue.DefaultTypedControllerRateLimiter[string]()
			if !prod {
				rl = bareLimiter()
			}
			start := time.Now()
			release := make([]time.Duration, 0, len(ks))
			for _, k := range ks {
				release = append(release, time.Since(start)+rl.When(k))
			}
			sort.Slice(release, func(a, b int) bool { return release[a] < release[b] })
			tail = release[len(release)-1]
			peak = 0
			for lo, hi := 0, 0; hi < len(release); hi++ {
				for release[hi]-release[lo] >= time.Second {
					lo++
				}
				peak = max(peak, hi-lo+1)
			}
		}
		b.ReportMetric(tail.Seconds(), "s_tail")
		b.ReportMetric(float64(peak), "retries_peak_1s")
	})
}

// BenchmarkSpuriousEvents: a key fails; 100 events for it arrive during its backoff, each one is
// processed and fails again. Reports the backoff the key then gets (a key without events: 5 ms).
func BenchmarkSpuriousEvents(b *testing.B) {
	configs(b, func(b *testing.B, prod bool) {
		k := keys(1)[0]
		var next time.Duration
		for i := 0; i < b.N; i++ {
			q := newQueue(prod)
			q.AddRateLimited(k)
			for e := 0; e < 100; e++ {
				q.Add(k)
				item, _ := q.Get()
				q.AddRateLimited(item)
				q.Done(item)
			}
			next = time.Duration(5*time.Millisecond) << min(q.NumRequeues(k), 40)
			if next > 1000*time.Second || next <= 0 {
				next = 1000 * time.Second
			}
			q.ShutDown()
		}
		b.ReportMetric(next.Seconds()*1000, "ms_next_backoff")
	})
}

// BenchmarkNewKeyWaitDuringBacklog: 100k keys queued (initial list, 2 µs of work each), 2 workers
// drain them while a fresh key arrives every 100 µs; p99 of a fresh key's wait. client-go has
// one FIFO lane.
func BenchmarkNewKeyWaitDuringBacklog(b *testing.B) {
	configs(b, func(b *testing.B, prod bool) {
		ks := keys(100_000)
		fresh := keys(200_000)[100_000:]
		var p99 float64
		for i := 0; i < b.N; i++ {
			q := basic(prod)
			for _, k := range ks {
				q.Add(k)
			}
			added := sync.Map{}
			waits := make([]float64, 0, 1024)
			var mu sync.Mutex
			var backlogLeft atomic.Int64
			backlogLeft.Store(int64(len(ks)))
			var wg sync.WaitGroup
			for w := 0; w < 2; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						item, shutdown := q.Get()
						if shutdown {
							return
						}
						// 2 µs of "reconcile" per item, same as benches/queue.rs.
						for t := time.Now(); time.Since(t) < 2*time.Microsecond; {
						}
						if t, ok := added.Load(item); ok {
							mu.Lock()
							waits = append(waits, time.Since(t.(time.Time)).Seconds()*1000)
							mu.Unlock()
						} else if backlogLeft.Add(-1) == 0 {
							q.ShutDown()
						}
						q.Done(item)
					}
				}()
			}
			for j := 0; backlogLeft.Load() > 0 && j < len(fresh); j++ {
				added.Store(fresh[j], time.Now())
				q.Add(fresh[j])
				time.Sleep(100 * time.Microsecond)
			}
			wg.Wait()
			sort.Float64s(waits)
			if len(waits) > 0 {
				p99 = waits[len(waits)*99/100]
			}
		}
		b.ReportMetric(p99, "ms_p99")
	})
}

// BenchmarkFairnessSingleKeyPosition: tenant A has 10k queued keys, then tenant B adds one key;
// how many items are handed out before B's key (one FIFO: all of A's).
func BenchmarkFairnessSingleKeyPosition(b *testing.B) {
	configs(b, func(b *testing.B, prod bool) {
		ks := keys(10_000)
		var pos int
		for i := 0; i < b.N; i++ {
			q := basic(prod)
			for j := range ks {
				q.Add("ns-a/" + ks[j])
			}
			q.Add("ns-b/only")
			for pos = 0; ; pos++ {
				item, _ := q.Get()
				q.Done(item)
				if item == "ns-b/only" {
					break
				}
			}
			q.ShutDown()
		}
		b.ReportMetric(float64(pos), "items_before")
	})
}

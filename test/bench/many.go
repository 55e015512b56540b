package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/cri-mirror-proxy/cri-mirror-proxy/store"
)

// manyAliases is the size of the alias table of the memory rows of a node
// with many original names: more than any one node pulls, so that the
// proxy's memory has a known ceiling.
const manyAliases = 20000

// manyListings is how many ListImages calls the many-aliases proxy answers
// before its second memory row: enough to fill its listing cache and let
// the garbage of the answers reach a steady state.
const manyListings = 20

// manyAliasesMemory records the memory of a proxy of its own whose alias
// table holds manyAliases aliases over the large set's images (several
// original names per image, the way one image is known under several tags),
// after start and after ListImages. The table is written before the proxy
// starts, so it costs seconds, not the hours of pulls it stands for.
func (b *bench) manyAliasesMemory(ctx context.Context) error {
	if b.cfg.proxyBin == "" || b.cfg.proxyConf == "" {
		b.notes = append(b.notes, fmt.Sprintf("The %d-alias memory rows were skipped (no -proxy-bin and -proxy-conf).", manyAliases))
		return nil
	}
	dir := filepath.Join(b.cfg.workDir, "many")
	if err := os.MkdirAll(filepath.Join(dir, "state"), 0o755); err != nil {
		return err
	}
	n, err := b.seedAliases(ctx, filepath.Join(dir, "state", "aliases.db"))
	if err != nil {
		return err
	}
	addr, err := freeLoopbackAddr()
	if err != nil {
		return err
	}
	p, err := startProxy(ctx, b.cfg.proxyBin, "--listen", "unix://"+filepath.Join(dir, "cri.sock"),
		"--runtime-endpoint", "unix://"+b.cfg.containerdSock,
		"--registries-conf", b.cfg.proxyConf, "--registries-conf-dir", filepath.Join(dir, "conf.d"),
		"--state-dir", filepath.Join(dir, "state"), "--metrics-address", addr)
	if err != nil {
		return err
	}
	defer p.stop()
	t, err := dial("proxy-many", filepath.Join(dir, "cri.sock"))
	if err != nil {
		return err
	}
	defer t.close()
	if err := b.memoryOf(ctx, fmt.Sprintf("idle, %d aliases on %d images, after start", manyAliases, n), p.cmd.Process.Pid, addr, true); err != nil {
		return err
	}
	for range manyListings {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		_, err := t.count(cctx)
		cancel()
		if err != nil {
			return err
		}
	}
	return b.memoryOf(ctx, fmt.Sprintf("idle, %d aliases on %d images, after %d ListImages", manyAliases, n, manyListings), p.cmd.Process.Pid, addr, true)
}

// seedAliases writes manyAliases aliases to a new alias database at path:
// the original names of the large set's images with extra tags, each image
// under the same number of names (to within one). It returns the number of
// images they point at.
func (b *bench) seedAliases(ctx context.Context, path string) (int, error) {
	ids := make([]string, 0, len(b.mirrors))
	listed, err := b.direct.imageIDs(ctx)
	if err != nil {
		return 0, err
	}
	var mirrors, sources []string
	for i, m := range b.mirrors {
		if id, ok := listed[m]; ok {
			ids, mirrors, sources = append(ids, id), append(mirrors, m), append(sources, b.sources[i])
		}
	}
	if len(ids) == 0 {
		return 0, errors.New("many aliases: containerd lists none of the large set's images")
	}
	as := make([]store.Alias, 0, manyAliases)
	for k := 0; len(as) < manyAliases; k++ {
		for i := 0; i < len(ids) && len(as) < manyAliases; i++ {
			as = append(as, store.Alias{Name: fmt.Sprintf("%s-%d", sources[i], k), ImageID: ids[i], Mirror: mirrors[i]})
		}
	}
	s, err := store.Open(path)
	if err != nil {
		return 0, err
	}
	if _, err := s.Restore(as); err != nil {
		_ = s.Close()
		return 0, err
	}
	return len(ids), s.Close()
}

// memoryOf records the memory of the proxy process pid, whose metrics are
// at addr, after a short settle.
func (b *bench) memoryOf(ctx context.Context, state string, pid int, addr string, many bool) error {
	select {
	case <-time.After(time.Second):
	case <-ctx.Done():
		return ctx.Err()
	}
	row := memoryRow{state: state, many: many}
	var err error
	if row.rss, row.hwm, err = procMem(pid); err != nil {
		return err
	}
	if row.hopRSS, row.hopHWM, err = procMem(b.hopPID); err != nil {
		return err
	}
	if err := b.runtimeStatsOf(ctx, addr, &row); err != nil {
		return err
	}
	b.memory = append(b.memory, row)
	logf("memory %s: proxy VmRSS %s (VmHWM %s)", state, mib(row.rss), mib(row.hwm))
	return nil
}

// proxyProcess is a proxy the driver started itself.
type proxyProcess struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// startProxy runs the proxy binary with `serve` and args (which must
// include --metrics-address, the last of them the address), in a session
// of its own like test/lib.sh's proxies, and waits until it is ready.
func startProxy(ctx context.Context, bin string, args ...string) (*proxyProcess, error) {
	cmd := exec.Command(bin, append([]string{"serve", "--log-level", "warn"}, args...)...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start proxy: %w", err)
	}
	p := &proxyProcess{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	ready := "http://" + args[len(args)-1] + "/readyz"
	client := &http.Client{Timeout: time.Second}
	for i := 0; ; i++ {
		resp, err := client.Get(ready)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p, nil
			}
		}
		if i == 100 || ctx.Err() != nil {
			p.stop()
			return nil, fmt.Errorf("proxy %s not ready after %d tries", bin, i)
		}
		select {
		case <-p.done:
			return nil, errors.New("proxy exited at start")
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// stop ends the proxy by its pid: SIGTERM, then SIGKILL after 5s.
func (p *proxyProcess) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

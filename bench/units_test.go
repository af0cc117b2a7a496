package bench

import (
	"strings"
	"testing"
	"time"
)

func TestParseUnits(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		scale uint8
		want  int64
	}{
		{"a whole number at scale 2", "12", 2, 1200},
		{"one decimal at scale 2", "12.5", 2, 1250},
		{"two decimals at scale 2", "0.25", 2, 25},
		{"scale 0", "7", 0, 7},
		{"a negative amount", "-1.01", 2, -101},
		{"zero", "0", 2, 0},
		{"empty reads as zero", "", 2, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseUnits(tt.in, tt.scale)
			if err != nil || got != tt.want {
				t.Fatalf("parseUnits(%q, %d) = %d, %v; want %d", tt.in, tt.scale, got, err, tt.want)
			}
			if back, _ := parseUnits(formatUnits(got, tt.scale), tt.scale); back != got {
				t.Fatalf("formatUnits(%d, %d) reads back as %d", got, tt.scale, back)
			}
		})
	}
}

func TestFormatUnits(t *testing.T) {
	for _, tt := range []struct {
		units int64
		scale uint8
		want  string
	}{
		{1250, 2, "12.50"}, {5, 2, "0.05"}, {-5, 2, "-0.05"}, {7, 0, "7"}, {0, 2, "0.00"},
	} {
		if got := formatUnits(tt.units, tt.scale); got != tt.want {
			t.Errorf("formatUnits(%d, %d) = %q; want %q", tt.units, tt.scale, got, tt.want)
		}
	}
}

func TestParseUnitsRefusesWhatIsNotAnAmount(t *testing.T) {
	for _, in := range []string{"1.234", "1.", ".5", "abc", "1e3", "99999999999999999999", "--1"} {
		if v, err := parseUnits(in, 2); err == nil {
			t.Errorf("parseUnits(%q, 2) = %d; want an error", in, v)
		}
	}
}

func TestParseMix(t *testing.T) {
	m, err := ParseMix(DefaultMix)
	if err != nil {
		t.Fatal(err)
	}
	if m[OpReport] != 80 || m[OpCheck] != 10 || m[OpReserve] != 5 || m[OpGrant] != 5 || m.String() != DefaultMix {
		t.Fatalf("ParseMix(%q) = %v (%s)", DefaultMix, m, m)
	}
	for _, tt := range []struct{ in, wantErr string }{
		{"report=80,bogus=1", "unknown operation"},
		{"report", "want op=weight"},
		{"report=-1", "must be an integer"},
		{"report=1,report=2", "given twice"},
		{"report=0", "no operation has a weight"},
		{"", "no operation has a weight"},
	} {
		if _, err := ParseMix(tt.in); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("ParseMix(%q) = %v; want an error containing %q", tt.in, err, tt.wantErr)
		}
	}
}

func TestValidateNamesTheWrongFlag(t *testing.T) {
	base := func() Config {
		c := Config{Addr: "http://127.0.0.1:1"}
		c.Defaults()
		return c
	}
	if c := base(); c.Validate() != nil {
		t.Fatalf("defaults do not validate: %v", c.Validate())
	}
	for _, tt := range []struct {
		flag string
		mod  func(*Config)
	}{
		{"--addr", func(c *Config) { c.Addr = "127.0.0.1:1" }},
		{"--customers", func(c *Config) { c.Customers = MaxCustomers + 1 }},
		{"--grants", func(c *Config) { c.GrantsPerCustomer = -1 }},
		{"--zipf", func(c *Config) { c.Zipf = 0.5 }},
		{"--duration", func(c *Config) { c.Duration = -1 }},
		{"--warmup", func(c *Config) { c.Warmup = -1 }},
		{"--concurrency", func(c *Config) { c.Concurrency = MaxConcurrency + 1 }},
		{"--rate", func(c *Config) { c.Rate = -1 }},
		{"--batch", func(c *Config) { c.Batch = MaxBatch + 1 }},
		{"run id", func(c *Config) { c.RunID = "Not/OK" }},
		{"--existing", func(c *Config) { c.Existing = "Not/OK" }},
		{"--existing", func(c *Config) { c.Existing = c.RunID }},
		{"--existing", func(c *Config) { c.Existing, c.Noop = "r1", true }},
		{"--noop-event-cost", func(c *Config) { c.NoopEventCost = time.Microsecond }},
		{"--noop-event-cost", func(c *Config) { c.NoopEventCost, c.Noop = -time.Microsecond, true }},
		{"--noop-event-cost", func(c *Config) { c.NoopEventCost, c.Noop = MaxNoopEventCost+1, true }},
	} {
		c := base()
		tt.mod(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tt.flag) {
			t.Errorf("with a bad %s: Validate() = %v", tt.flag, err)
		}
	}
}

package export

import (
	"reflect"
	"testing"

	"github.com/creditd/creditd/fsm"
)

// Every exported field of fsm's LedgerEntry and Grant has its column: a
// field added to fsm fails here until the export (and the README) carry it.
func TestEveryFieldOfTheModelHasAColumn(t *testing.T) {
	for _, tc := range []struct {
		typ     reflect.Type
		cols    []Column
		mapping map[string]string
	}{
		{reflect.TypeFor[fsm.LedgerEntry](), LedgerColumns, map[string]string{
			"Seq": "seq", "Time": "time", "CustomerID": "customer_id", "CreditTypeID": "credit_type_id",
			"GrantID": "grant_id", "Kind": "kind", "Amount": "amount", "Repaid": "repaid", "BalanceAfter": "balance_after",
			"CostBasis": "cost_basis", "Currency": "currency", "MoneyMicros": "money_amount", "CauseKind": "cause_kind",
			"CauseID": "cause_id", "SourceKind": "source_kind", "SourceRef": "source_ref", "Reason": "reason",
		}},
		{reflect.TypeFor[fsm.Grant](), GrantColumns, map[string]string{
			"ID": "grant_id", "CustomerID": "customer_id", "CreditTypeID": "credit_type_id", "Category": "category",
			"Amount": "amount", "Remaining": "remaining", "CostBasis": "cost_basis", "Currency": "currency",
			"DeferredMicros": "deferred_revenue", "Priority": "priority", "EffectiveAt": "effective_at",
			"ExpiresAt": "expires_at", "SourceKind": "source_kind", "SourceRef": "source_ref", "Status": "status",
			"Burned": "burned", "Expired": "expired", "Revoked": "revoked", "Adjusted": "adjusted", "Reason": "reason",
			"CreatedAt": "created_at", "UpdatedAt": "updated_at",
		}},
	} {
		for i := range tc.typ.NumField() {
			f := tc.typ.Field(i)
			if !f.IsExported() {
				continue // the applier's bookkeeping, never stored
			}
			col, ok := tc.mapping[f.Name]
			if !ok {
				t.Errorf("%s.%s has no column: export it and document it", tc.typ.Name(), f.Name)
				continue
			}
			if colIndex(tc.cols, col) < 0 {
				t.Errorf("%s.%s maps to column %s, which the schema lacks", tc.typ.Name(), f.Name, col)
			}
		}
	}
}

func TestSchemasHaveUniqueDocumentedColumns(t *testing.T) {
	for _, cols := range [][]Column{LedgerColumns, GrantColumns, ReportColumns} {
		seen := map[string]bool{}
		for _, c := range cols {
			if seen[c.Name] || c.Doc == "" || c.Type == nil {
				t.Errorf("column %q is repeated or undocumented", c.Name)
			}
			seen[c.Name] = true
		}
	}
}

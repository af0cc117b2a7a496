package bench

import (
	"fmt"
	"math"
)

// What a run's setup creates, named and sized in one place: Run's setup
// uses these, and so does "creditd bench seed", which builds the same state
// offline (a million customers through the API take hours), so that a run
// with Config.Existing finds exactly what its own setup would have made.
const (
	CreditTypeID   = creditTypeID
	CreditTypeName = "bench credits"
	// CreditScale is the credit type's number of decimals.
	CreditScale = creditScale
	FeatureID   = featureID
	FeatureName = "bench tokens"
	// FeatureRate is credits per unit of the feature, a decimal.
	FeatureRate = featureRate
	PlanID      = planID
	PlanName    = "bench plan"
	// PlanCurrency and PlanPricePerCredit are the plan's price; the plan
	// denies usage beyond the balance (no overdraft).
	PlanCurrency       = "USD"
	PlanPricePerCredit = "0.01"
)

// CustomerID is the id of customer i of the run (or seed) runID.
func CustomerID(runID string, i int) string { return fmt.Sprintf("b%s-c%d", runID, i) }

// GrantID is the id of the g-th setup grant of a customer.
func GrantID(customerID string, g int) string { return fmt.Sprintf("%s-g%d", customerID, g) }

// GrantPriority is the priority of the g-th setup grant (all promotional).
func GrantPriority(g int) uint32 { return uint32(g % 1001) }

// GrantUnits is the amount, in units of the credit type (CreditScale
// decimals), of each setup grant when a customer has grantsPerCustomer of
// them: together they hold setupGrantCredits.
func GrantUnits(grantsPerCustomer int) int64 {
	if grantsPerCustomer < 1 {
		grantsPerCustomer = 1
	}
	return setupGrantCredits / int64(grantsPerCustomer) * int64(math.Pow10(creditScale))
}

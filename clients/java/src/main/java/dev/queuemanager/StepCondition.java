package dev.queuemanager;

import java.util.Map;
import queue_manager.v1.Workflows;

/**
 * One condition of a workflow step's {@code runIf}: a predecessor's result, at a path, compared with a value
 * (or its error message, with {@link #whenError}). Numbers compare as numbers, strings as strings; values of
 * different types, or a path that leads nowhere, make it false (but {@code not_exists}).
 */
public final class StepCondition {
  private static final Map<String, Workflows.ConditionOperator> OPERATORS =
      Map.of(
          "==", Workflows.ConditionOperator.CONDITION_OPERATOR_EQUAL,
          "!=", Workflows.ConditionOperator.CONDITION_OPERATOR_NOT_EQUAL,
          ">", Workflows.ConditionOperator.CONDITION_OPERATOR_GREATER_THAN,
          ">=", Workflows.ConditionOperator.CONDITION_OPERATOR_GREATER_OR_EQUAL,
          "<", Workflows.ConditionOperator.CONDITION_OPERATOR_LESS_THAN,
          "<=", Workflows.ConditionOperator.CONDITION_OPERATOR_LESS_OR_EQUAL,
          "exists", Workflows.ConditionOperator.CONDITION_OPERATOR_EXISTS,
          "not_exists", Workflows.ConditionOperator.CONDITION_OPERATOR_NOT_EXISTS,
          "in", Workflows.ConditionOperator.CONDITION_OPERATOR_IN,
          "contains", Workflows.ConditionOperator.CONDITION_OPERATOR_CONTAINS);

  private final Workflows.StepCondition proto;

  private StepCondition(Workflows.StepCondition proto) {
    this.proto = proto;
  }

  /**
   * A condition on a predecessor's JSON result: {@code when("validate", "total", ">", 100)}.
   *
   * @param step the key of a predecessor (the step whose onSuccess / onFailure holds this one, or one it
   *     depends on); "" for the only one
   * @param path a dotted path into its result ({@code "order.total"}, {@code "items.0.sku"}); "" for all
   * @param operator {@code == != > >= < <= exists not_exists in contains}
   * @param value what to compare with (any value Gson encodes, null for JSON null, a list for {@code in});
   *     null for {@code exists} and {@code not_exists}, which take none
   */
  public static StepCondition when(String step, String path, String operator, Object value) {
    return new StepCondition(build(step, path, operator, value, false));
  }

  /** A condition on a predecessor's error message: {@code whenError("charge", "contains", "declined")}. */
  public static StepCondition whenError(String step, String operator, Object value) {
    return new StepCondition(build(step, "", operator, value, true));
  }

  private static Workflows.StepCondition build(
      String step, String path, String operator, Object value, boolean onError) {
    Workflows.ConditionOperator op = OPERATORS.get(operator);
    if (op == null) {
      throw new IllegalArgumentException(
          "runIf: unknown operator \"" + operator + "\"; use ==, !=, >, >=, <, <=, exists, not_exists, in or"
              + " contains");
    }
    var b =
        Workflows.StepCondition.newBuilder()
            .setStep(step == null ? "" : step)
            .setPath(path == null ? "" : path)
            .setOperator(op);
    if (onError) {
      b.setSource(Workflows.ConditionSource.CONDITION_SOURCE_ERROR);
    }
    boolean noValue =
        op == Workflows.ConditionOperator.CONDITION_OPERATOR_EXISTS
            || op == Workflows.ConditionOperator.CONDITION_OPERATOR_NOT_EXISTS;
    if (noValue) {
      if (value != null) {
        throw new IllegalArgumentException("runIf: \"" + operator + "\" takes no value");
      }
    } else {
      b.setValue(Payloads.jsonValue(value));
    }
    return b.build();
  }

  Workflows.StepCondition proto() {
    return proto;
  }
}

package dev.queuemanager;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import queue_manager.v1.QueueServiceOuterClass;
import queue_manager.v1.Types;

/** One page of {@link QueueManager#listGroups}. */
public final class GroupPage {
  private final List<GroupInfo> groups;
  private final String nextPageToken;
  private final long total;

  GroupPage(QueueServiceOuterClass.ListGroupsResponse resp) {
    List<GroupInfo> out = new ArrayList<>();
    for (Types.GroupInfo group : resp.getGroupsList()) {
      out.add(new GroupInfo(group));
    }
    this.groups = Collections.unmodifiableList(out);
    this.nextPageToken = resp.getNextPageToken();
    this.total = resp.getTotalSize();
  }

  /** The groups of this page, by name. */
  public List<GroupInfo> groups() {
    return groups;
  }

  /** The token that asks for the next page; "" on the last page. */
  public String nextPageToken() {
    return nextPageToken;
  }

  /** Whether there is a next page (the token is not ""). */
  public boolean hasNextPage() {
    return !nextPageToken.isEmpty();
  }

  /** How many groups the queue knows. */
  public long total() {
    return total;
  }
}
